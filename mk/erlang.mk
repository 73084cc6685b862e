# Erlang/OTP messaging service (erlang_messaging/). Included by the main Makefile.
# rebar3 runs offline: every library comes from Debian packages on the code path.

ERLANG_DIR := erlang_messaging
REBAR := cd $(ERLANG_DIR) && HEX_OFFLINE=1 REBAR_OFFLINE=1 rebar3

.PHONY: erlang-build erlang-test erlang-release messaging messaging-release bench-messaging

# The OTP release (rebar.config's relx section, profile prod, the runtime included).
# MESSAGING_RELEASE is the assembled release; `$(MESSAGING_RELEASE)/bin/messaging_service
# foreground` runs it under its supervisor in the foreground (configuration from the
# environment, MESSAGING_COOKIE required). MESSAGING_TARBALL is the same release packed
# to be unpacked anywhere else (messaging/tests/test_release.py does so).
MESSAGING_VSN := $(shell sed -n 's/.*{vsn, *"\([^"]*\)".*/\1/p' $(ERLANG_DIR)/src/messaging_service.app.src)
MESSAGING_RELEASE := $(ERLANG_DIR)/_build/prod/rel/messaging_service
MESSAGING_TARBALL := $(MESSAGING_RELEASE)/messaging_service-$(MESSAGING_VSN).tar.gz

erlang-build:
	@echo "==> Erlang: rebar3 compile"
	@$(REBAR) compile

erlang-test: erlang-build
	@echo "==> Erlang: rebar3 xref"
	@$(REBAR) xref
	@echo "==> Erlang: rebar3 eunit (unit + PropEr properties)"
	@$(REBAR) eunit
	@echo "==> Erlang: rebar3 ct (HTTP, fault-injection and other suites)"
	@$(REBAR) ct

# Rebuilt only when a source, the release configuration or the start hook changed.
$(MESSAGING_TARBALL): $(wildcard $(ERLANG_DIR)/src/*) $(ERLANG_DIR)/rebar.config \
		$(wildcard $(ERLANG_DIR)/config/*) $(wildcard $(ERLANG_DIR)/rel/hooks/*)
	@echo "==> Erlang: rebar3 as prod tar (release with the runtime included)"
	@$(REBAR) as prod tar

erlang-release: $(MESSAGING_TARBALL)

# Development mode: the development MESSAGING_SHARED_SECRET is accepted (DEBUG=true).
messaging: erlang-build
	@DEBUG=true exec $(ERLANG_DIR)/bin/messaging-start

messaging-release: erlang-release
	@exec $(MESSAGING_RELEASE)/bin/messaging_service foreground

bench-messaging: erlang-build
	@if [ -x bench/messaging.sh ]; then bench/messaging.sh; \
	elif [ -f bench/messaging.sh ]; then bash bench/messaging.sh; \
	else echo "bench/messaging.sh not found"; exit 1; fi
