"""What every operator shares: the backend ``registry`` (each record carries its capabilities), the ``autocast`` and
memory ``layout`` rules, the ``tolerance`` table the tests and benchmarks compare with, and ``determinism``'s switch
for the deterministic image gradients."""
