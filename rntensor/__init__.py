"""rntensor: ROOT (TTree and RNTuple) event data → ML tensors."""
