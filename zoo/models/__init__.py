"""Models: the backbone table, builders with a softmax head, and pretrained weights."""
