"""Deep Feature Flow video segmentation on top of icnet_tf's chained builder."""
