"""``geolink-edge index build|merge|info``: the georeferenced satellite-tile index."""

from __future__ import annotations

from pathlib import Path

import typer

from geolink_edge.commands.conf_options import conf_option, given, validated
from geolink_edge.errors import GeolinkError

index_app = typer.Typer(help="Build, merge and inspect satellite-tile index bundles.", no_args_is_help=True)


def _scales(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise GeolinkError(f"--scales {text!r}: expected comma-separated numbers, e.g. 1,1.5,2") from None


BUILD_CONF = "geolink_edge.index.build:BuildConfig"


@index_app.command("build")
def build(
    model: Path = typer.Option(..., help="encoder to embed with (.onnx, .int8.onnx, .engine or .pt)"),
    out: Path = typer.Option(..., help="bundle folder to write (with --shard: the shards' root folder)"),
    ortho: list[Path] = typer.Option(None, help="GeoTIFF orthophoto (any CRS, RGB or palette); repeatable"),
    tiles: Path = typer.Option(
        None, help="corner CSV: Filename,Top_left_lat,Top_left_lon,Bottom_right_lat,Bottom_right_long"
    ),
    xyz: Path = typer.Option(None, help="Web-Mercator tile pyramid folder {z}/{x}/{y}.png|jpg"),
    crs: str = typer.Option(
        None, help="CRS of the rasters, replacing their own label: EPSG:<code>, or 'local' for plain metres"
    ),
    nodata: float = typer.Option(
        None, help="raster colour value that means no imagery (e.g. 0 for an untagged black border)"
    ),
    tile_m: float = typer.Option(None, help="tile footprint in metres (default: the model card's tile_m)"),
    stride_m: float = typer.Option(None, help="grid step in metres (default: half the tile)"),
    scales: str | None = conf_option(
        BUILD_CONF, "scales", help="footprint multipliers for other altitudes, e.g. 1,1.5,2"
    ),
    crop_px: int = typer.Option(
        None, help="tile crop size for embedding and tile images (default: max(model input, 512))"
    ),
    map_gsd: float = typer.Option(
        None, help="map store resolution in m/px (default: the finest source's native GSD)"
    ),
    min_valid: float | None = conf_option(
        BUILD_CONF, "min_valid", help="least fraction of a tile that must hold imagery, not nodata"
    ),
    index_type: str | None = conf_option(
        BUILD_CONF,
        "index_type",
        help="flat, sqfp16, sq8, hnsw, hnsw-sq8, ivfpq, compact (PCA768,IVF,SQ8), "
        "auto (flat up to 100k tiles, then compact) or a faiss factory string",
    ),
    batch_size: int | None = conf_option(BUILD_CONF, "batch_size", help="tiles per embedding batch"),
    workers: int | None = conf_option(BUILD_CONF, "workers", help="threads that read and warp tiles"),
    shard: str = typer.Option(
        None, help="embed part i of n (i/n) into OUT/shard-i-of-n; join with index merge"
    ),
    force: bool = typer.Option(False, help="replace an existing bundle"),
) -> None:
    """Cut north-up tiles from reference imagery, embed them and write a searchable bundle."""
    from geolink_edge.index.build import BuildConfig, main

    conf = validated(
        BuildConfig,
        **given(
            tile_m=tile_m,
            stride_m=stride_m,
            scales=None if scales is None else _scales(scales),
            crop_px=crop_px,
            min_valid=min_valid,
            index_type=index_type,
            batch_size=batch_size,
            workers=workers,
            crs=crs,
            nodata=nodata,
            map_gsd=map_gsd,
        ),
    )
    path = main(conf, model, out, ortho=ortho or None, tiles_csv=tiles, xyz=xyz, force=force, shard=shard)
    typer.echo(f"wrote {path}")


@index_app.command("merge")
def merge(
    shards: Path = typer.Argument(..., help="folder holding shard-i-of-n folders"),
    out: Path = typer.Option(..., help="bundle folder to write"),
    index_type: str | None = conf_option(
        "geolink_edge.index.build:merge", "index_type", help="as for index build"
    ),
    force: bool = typer.Option(False, help="replace an existing bundle"),
) -> None:
    """Join the shards of an `index build --shard i/n` run into one bundle."""
    from geolink_edge.index.build import merge as merge_shards

    typer.echo(f"wrote {merge_shards(shards, out, force=force, **given(index_type=index_type))}")


@index_app.command("info")
def info(bundle: Path = typer.Argument(..., help="index bundle folder")) -> None:
    """Summarise a bundle: model, tiles, frame, faiss type."""
    from geolink_edge.index.search import TileIndex

    index = TileIndex.load(bundle)
    m = index.manifest
    xy = index.centers_xy
    extent = xy.max(axis=0) - xy.min(axis=0) if len(xy) else (0, 0)
    typer.echo(
        f"{bundle}: {len(index)} tiles, dim {index.dim}, "
        f"faiss {m.get('faiss_type')} {m.get('faiss_params') or ''}"
    )
    typer.echo(f"model {str(index.model_hash)[:12]}, crs {index.crs}, origin {m.get('origin')}")
    typer.echo(
        f"tiling {m.get('tiling')}, map {m.get('map_gsd_m')} m/px, extent {extent[0]:.0f} x {extent[1]:.0f} m"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(index_app, name="index")
