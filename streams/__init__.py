"""The stream processors: the Faust app, intake (decode, validate, dead-letter), HTTP views."""
