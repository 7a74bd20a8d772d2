"""KnowledgeBase internals: sources -> documents -> sections -> chunks -> vectors -> Milvus, and search."""
