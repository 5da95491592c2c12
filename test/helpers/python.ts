/**
 * The Python the tests run: FLOTILLA_PYTHON when set (CI sets it to the venv .ci/run builds, with
 * `pip install ./python` and the pinned packages), else Debian's /usr/bin/python3 (python3-numpy,
 * python3-torch). Importing this also sets FLOTILLA_PYTHON, so the examples' `{python}` resolves
 * to the same interpreter in simulated and POC sites.
 */
export const PYTHON = process.env.FLOTILLA_PYTHON || '/usr/bin/python3';
process.env.FLOTILLA_PYTHON = PYTHON;

/** Debian's interpreter, for what must start from the system Python (creating a fresh venv). */
export const SYSTEM_PYTHON = '/usr/bin/python3';
