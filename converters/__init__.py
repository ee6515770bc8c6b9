"""Weight readers and key maps: Caffe-converted `.npy` and PyTorch `.pth` into icnet_tf / dff_tf."""
