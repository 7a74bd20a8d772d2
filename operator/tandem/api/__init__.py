"""The Tandem API: typed resources, the kinds registry and the CRDs generated from them."""
