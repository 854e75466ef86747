"""The build's steps, one module each, in the order the seed describes them."""
