"""The GeoLink networks: 2D image encoder (timm backbone + MixVPR) and the 3D branch."""
