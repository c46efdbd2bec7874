# Source it after install.sh (`. ./activate.sh`, from the checkout): puts the Python that install.sh installed
# into first on PATH, so `splatdistill` and `python3 -m pytest` use it. That is ./.venv when install.sh made one
# (a system Python that refuses pip, PEP 668) and no virtual environment is active; otherwise nothing changes.
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f .venv/bin/activate ]; then
    . .venv/bin/activate
fi
