"""``triton``: hand-written Triton kernels (``kernels.py``) and their launch glue and backend record
(``launcher.py``)."""
