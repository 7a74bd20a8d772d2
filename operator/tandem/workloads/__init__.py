"""The real work, shared by the operator's pods and `tandem up`: ingest, train, serve. No kopf here."""
