# ssed: `make run` serves conf/ssed.ini; `make test` sets up pytest in .venv and runs the suite;
# `make cluster-demo` runs a local three-node cluster.
PYTHON  ?= python3
VENV    ?= .venv
PREFIX  ?= /usr/local
DESTDIR ?=
CONFIG  ?= conf/ssed.ini
LIBDIR   = $(PREFIX)/lib/ssed
UNITDIR ?= $(PREFIX)/lib/systemd/system
DOCDIR  ?= $(PREFIX)/share/doc/ssed

.PHONY: run test check bench bench-full install clean docs cluster-demo

run:
	$(PYTHON) -m ssed -c $(CONFIG)

# A local redis-server (a free port, in memory) and the three nodes of conf/cluster-*.ini;
# it prints how to watch and publish, and Ctrl-C stops it all (conf/cluster-demo.py).
cluster-demo:
	$(PYTHON) conf/cluster-demo.py

$(VENV)/.ready-xdist:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check pytest pytest-xdist
	touch $@

test: $(VENV)/.ready-xdist
	$(VENV)/bin/python -m pytest -q -n 2

check:
	$(PYTHON) -m ssed --check -c $(CONFIG)
	for ini in conf/cluster-*.ini; do $(PYTHON) -m ssed --check -c $$ini || exit 1; done
	$(PYTHON) -m compileall -q ssed tests bench

# Fan-out benchmark (bench/load.py): a markdown table on stdout, each run appended to
# bench/results/history.jsonl and compared with the last one. bench: the quick set (~1 min);
# bench-full: the whole matrix, twice (~3 min).
bench:
	$(PYTHON) bench/load.py

bench-full:
	$(PYTHON) bench/load.py --full

install:
	install -d $(DESTDIR)$(LIBDIR)/ssed $(DESTDIR)$(PREFIX)/bin $(DESTDIR)/etc/ssed $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DOCDIR)
	install -m 644 ssed/*.py ssed/*.ini ssed/*.html $(DESTDIR)$(LIBDIR)/ssed/
	install -m 644 README.md $(DESTDIR)$(DOCDIR)/README.md
	printf '#!/bin/sh\nPYTHONPATH=%s$${PYTHONPATH:+:$$PYTHONPATH} exec %s -m ssed "$$@"\n' \
	  '$(LIBDIR)' '$(PYTHON)' > $(DESTDIR)$(PREFIX)/bin/ssed
	printf '#!/bin/sh\nPYTHONPATH=%s$${PYTHONPATH:+:$$PYTHONPATH} exec %s -m ssed.ctl "$$@"\n' \
	  '$(LIBDIR)' '$(PYTHON)' > $(DESTDIR)$(PREFIX)/bin/ssectl
	chmod 755 $(DESTDIR)$(PREFIX)/bin/ssed $(DESTDIR)$(PREFIX)/bin/ssectl
	for unit in ssed.service ssed@.service; do \
	  sed -e 's#@BINDIR@#$(PREFIX)/bin#g' -e 's#@DOCDIR@#$(DOCDIR)#g' systemd/$$unit > $(DESTDIR)$(UNITDIR)/$$unit || exit 1; \
	done
	install -m 644 systemd/ssed.socket $(DESTDIR)$(UNITDIR)/ssed.socket
	test -e $(DESTDIR)/etc/ssed/ssed.ini || install -m 644 conf/ssed-system.ini $(DESTDIR)/etc/ssed/ssed.ini

clean:
	rm -rf $(VENV) .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# Regenerate the README's keys table from ssed/config.py's KEYS (a test checks they agree).
docs:
	$(PYTHON) -c 'import re, subprocess, sys; t = open("README.md").read(); \
	k = subprocess.run([sys.executable, "-m", "ssed.config", "--keys"], capture_output=True, text=True, check=True).stdout.strip(); \
	open("README.md", "w").write(re.sub(r"(<!-- keys:begin -->\n).*?(\n<!-- keys:end -->)", lambda m: m.group(1) + k + m.group(2), t, flags=re.S))'
