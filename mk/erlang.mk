# Erlang/OTP messaging service (erlang_messaging/). Included by the main Makefile.
# rebar3 runs offline: every library comes from Debian packages on the code path.

ERLANG_DIR := erlang_messaging
REBAR := cd $(ERLANG_DIR) && HEX_OFFLINE=1 REBAR_OFFLINE=1 rebar3

.PHONY: erlang-build erlang-test messaging bench-messaging

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

messaging: erlang-build
	@exec $(ERLANG_DIR)/bin/messaging-start

bench-messaging: erlang-build
	@if [ -x bench/messaging.sh ]; then bench/messaging.sh; \
	elif [ -f bench/messaging.sh ]; then bash bench/messaging.sh; \
	else echo "bench/messaging.sh not found"; exit 1; fi
