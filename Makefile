# Bare-metal build and install. `make release` builds optimised binaries; `make install`
# (as root) installs them, the systemd units and example configs, and creates the `mq` user.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
DOCDIR ?= $(PREFIX)/share/doc/mq
UNITDIR ?= /etc/systemd/system
CONFDIR ?= /etc/mq
BINARIES = mqd mqctl mq-bench telemetry-streamer telemetry-collector telemetry-gateway telemetry-stack

.PHONY: release test install uninstall verify-units

release:
	cargo build --release --workspace --bins

test:
	cargo test --workspace

install: release
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(CONFDIR) $(DESTDIR)$(DOCDIR)
	for b in $(BINARIES); do install -m 0755 target/release/$$b $(DESTDIR)$(BINDIR)/$$b; done
	install -m 0644 deploy/systemd/*.service $(DESTDIR)$(UNITDIR)/
	for f in deploy/config/*.toml; do \
	  [ -e $(DESTDIR)$(CONFDIR)/$$(basename $$f) ] || install -m 0640 $$f $(DESTDIR)$(CONFDIR)/; \
	done
	install -m 0644 docs/operations.md README.md BENCHMARKS.md $(DESTDIR)$(DOCDIR)/
	cp -r spec $(DESTDIR)$(DOCDIR)/
	@if [ -z "$(DESTDIR)" ]; then \
	  getent passwd mq >/dev/null || useradd --system --home-dir /var/lib/mq --shell /usr/sbin/nologin mq; \
	  chgrp mq $(CONFDIR)/*.toml; \
	  systemctl daemon-reload || true; \
	  echo "installed; next: systemctl enable --now mqd telemetry-collector telemetry-gateway telemetry-streamer@0"; \
	fi

uninstall:
	for b in $(BINARIES); do rm -f $(DESTDIR)$(BINDIR)/$$b; done
	rm -f $(DESTDIR)$(UNITDIR)/mqd.service $(DESTDIR)$(UNITDIR)/telemetry-*.service
	rm -rf $(DESTDIR)$(DOCDIR)

verify-units:
	cargo test -p mq-tools --test deploy_units -- --nocapture
