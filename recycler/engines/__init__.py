"""The evaluation engines, one module each (see `recycler.engine`): `hf` scores with transformers
through lm-eval's HFLM, `vllm` with a vLLM engine whose weights are replaced in place."""
