"""Model bundles (verified on load), 2-D MONAI U-Net inference and training. Knows no anatomy rules."""
