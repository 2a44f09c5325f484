"""Training: prepare manifests, train the MobileNetV2 transfer-learning classifier, evaluate it."""
