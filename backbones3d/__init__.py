"""backbones3d: whole 3D networks and a timm-style registry (DESIGN.md §1, §2, §5–§9)."""
