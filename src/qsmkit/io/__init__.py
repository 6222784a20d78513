"""File input and output. The only package of qsmkit that touches files."""
