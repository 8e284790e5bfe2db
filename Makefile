.PHONY: lab test bench gpu-check

lab:  ## start JupyterLab with demo.ipynb (creates or reuses .venv)
	scripts/lab

test:  ## the whole test suite (creates or reuses .venv)
	scripts/test

bench:  ## benchmarks only
	scripts/venv && .venv/bin/python benchmarks/bench_readings.py

gpu-check:  ## the GPU tier, on a machine with CUDA
	scripts/gpu-check
