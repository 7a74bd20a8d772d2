"""AdapterTraining internals: dataset -> (RAFT) examples -> LoRA training under Ray Train -> adapter."""
