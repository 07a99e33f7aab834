"""Deploy and verify helpers: the Modelfile and the answer checks."""
