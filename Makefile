.PHONY: lab test bench gpu-check

lab:  ## start JupyterLab with demo.ipynb (creates or reuses .venv)
	scripts/lab

test:  ## the whole test suite (creates or reuses .venv)
	scripts/test

bench:  ## every benchmark, beside its peers (installs them into .venv)
	scripts/bench

gpu-check:  ## the GPU tier, on a machine with CUDA
	scripts/gpu-check
