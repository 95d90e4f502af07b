"""Knowledge graphs for the knowledge-fused language model: loading (`sources`), one shared
triple container (`graph`), turning triples into text (`verbalise`), retrieval and rules."""
