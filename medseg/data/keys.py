"""The keys of a sample dict that every stage shares: the image file(s) and the label map."""

IMAGE = "image"
LABEL = "label"
