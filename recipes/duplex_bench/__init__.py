"""A Full-Duplex-Bench-style evaluation of VITA's duplex session: our own samples in FDB's folder format
(`generate`), a real-time run of `DuplexSession` over them (`evaluate`) and FDB's turn-taking metrics (`metrics`)."""
