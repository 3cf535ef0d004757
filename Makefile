# insightfs - Cloud Insight dashboards as a read-only FUSE filesystem.
#
#   make              build/insightfs
#   make check        install missing Debian packages, build, run every test
#   make check SANITIZE=address,undefined    the same under ASan+UBSan (build/asan/)
#   make check VALGRIND=1    the plain build, every test binary and insightfs run under valgrind
#   make demo         mount the bundled local API, show the tree, unmount
#   make bench        SPEC 11 benchmark (not a test): insightfs vs tmpfs, curl, httpdirfs, rclone
#   make soak         1-hour soak under faults (RELIABILITY T20); SOAK_SECONDS=120 in CI
#   make fuzz         libFuzzer targets (RELIABILITY P7), FUZZ_SECONDS=60 each, as in CI
#   make install      the binary, insightfs(1), the example configuration and the
#                     systemd template insightfs@.service under $(DESTDIR)$(PREFIX)
#   make uninstall    removes exactly what `make install` put there (same DESTDIR, PREFIX)

VERSION := 0.1.0

PREFIX ?= /usr/local
BINDIR := $(PREFIX)/bin
MANDIR := $(PREFIX)/share/man/man1
DOCDIR := $(PREFIX)/share/doc/insightfs
UNITDIR := $(PREFIX)/lib/systemd/system
CFLAGS ?= -O2 -g
SANITIZE ?=
VALGRIND ?=
ifeq ($(VALGRIND),0)
override VALGRIND :=
endif

PKGS := fuse3 libcurl openssl libconfig json-c hiredis
WARN := -Wall -Wextra -Werror -Wshadow -Wno-missing-field-initializers

ifneq ($(and $(SANITIZE),$(VALGRIND)),)
$(error VALGRIND=1 runs the plain build: it cannot be combined with SANITIZE)
endif

ifeq ($(SANITIZE),)
B := build
else ifneq ($(findstring thread,$(SANITIZE)),)
B := build/tsan
CC := clang
SANFLAGS := -fsanitize=$(SANITIZE) -fno-omit-frame-pointer
else
B := build/asan
SANFLAGS := -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
endif

ALL_CFLAGS := -std=gnu11 $(WARN) $(CFLAGS) $(SANFLAGS) -D_GNU_SOURCE -Iinclude \
	-DINSIGHTFS_VERSION='"$(VERSION)"' $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
ALL_LDFLAGS := $(LDFLAGS) $(SANFLAGS)
LDLIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread

MODULES := log vpath cfg cfg_file cfg_settings cfg_shared cfg_dashboards cfg_dump sign http http_errno http_tls api api_body api_breaker shared shared_conn flight slab cache cache_index ns disc engine cpu fs_ino fs fs_dir fs_meta fs_gen fs_inval fs_mnt fs_wait fs_ra fs_io fs_mount fs_pages main_opts main
OBJS := $(MODULES:%=$(B)/obj/%.o)

# Each unit test links its module and the modules it needs, nothing else.
UNIT_TESTS := vpath cfg sign http api flight slab cache log ns disc engine cpu shared fs
UNIT_DEPS_vpath := vpath
UNIT_DEPS_cfg := cfg cfg_file cfg_settings cfg_shared cfg_dashboards cfg_dump vpath log
UNIT_DEPS_sign := sign
UNIT_DEPS_http := http http_errno http_tls log
UNIT_DEPS_api := api api_body api_breaker http http_errno http_tls sign log
UNIT_DEPS_flight := flight
UNIT_DEPS_cache := cache cache_index flight slab vpath log
UNIT_DEPS_engine := engine
UNIT_DEPS_cpu := cpu
UNIT_DEPS_slab := slab
UNIT_DEPS_log := log
UNIT_DEPS_ns := ns cfg cfg_file cfg_settings cfg_shared cfg_dashboards cfg_dump vpath log
UNIT_DEPS_disc := disc flight api api_body api_breaker http http_errno http_tls sign $(UNIT_DEPS_ns)
UNIT_DEPS_shared := shared shared_conn api api_body api_breaker http http_errno http_tls sign $(UNIT_DEPS_cfg)
# test_fs drives the request handlers without a mount: every module but main, and the
# seams of its opening comment (GNU ld --wrap).
UNIT_DEPS_fs := $(filter-out main main_opts,$(MODULES))
UNIT_LDFLAGS_fs := $(foreach f,fuse_req_userdata fuse_reply_entry fuse_reply_err \
	fuse_reply_open fuse_req_interrupt_func cache_version_state disc_build_tree \
	engine_set_threads engine_submit fs_inval_name cfg_load shared_free \
	fuse_lowlevel_notify_inval_entry umount2,-Wl,--wrap=$(f))
UNIT_BINS := $(UNIT_TESTS:%=$(B)/tests/test_%)

# Debian packages of SPEC section 10: build, then tests.
DEBS := libfuse3-dev fuse3 libcurl4-openssl-dev libssl-dev libconfig-dev pkg-config \
	libjson-c-dev libhiredis-dev tzdata python3-pytest libcmocka-dev rsync file openssl clang \
	libclang-rt-14-dev valgrind man-db redis-server chromium chromium-driver python3-selenium
BENCH_DEBS := httpdirfs rclone

PYTEST := /usr/bin/python3 -m pytest

.PHONY: all deps check unit integration demo install uninstall clean bench-deps bench fuzz soak
all: $(B)/insightfs

$(B)/insightfs: $(OBJS)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/obj/%.o: src/%.c $(wildcard include/insightfs/*.h src/*_int.h) | $(B)/obj
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(B)/obj $(B)/tests:
	mkdir -p $@

.SECONDEXPANSION:
$(B)/tests/test_%: tests/unit/test_%.c $$(addprefix $(B)/obj/,$$(addsuffix .o,$$(UNIT_DEPS_$$*))) \
		$(wildcard tests/unit/*.h src/*_int.h) | $(B)/tests
	$(CC) $(ALL_CFLAGS) $(shell pkg-config --cflags cmocka 2>/dev/null) $(ALL_LDFLAGS) \
		$(UNIT_LDFLAGS_$*) -o $@ $(filter %.c %.o,$^) \
		$(LDLIBS) $(shell pkg-config --libs cmocka 2>/dev/null)

# libFuzzer targets (RELIABILITY P7), always clang with ASan+UBSan, in build/fuzz/:
# `make fuzz` runs each for FUZZ_SECONDS on a copy of its seed corpus (tests/fuzz/corpus)
# and fails when any finds a crash, a timeout, a leak or runs out of memory.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := vpath cfg api_json retry_after
FUZZ_DEPS_vpath := vpath
FUZZ_DEPS_cfg := $(UNIT_DEPS_cfg)
FUZZ_DEPS_api_json := api api_body api_breaker http http_errno http_tls sign log
FUZZ_DEPS_retry_after := http http_errno http_tls log
FUZZ_BINS := $(FUZZ_TARGETS:%=build/fuzz/fuzz_%)
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS := -std=gnu11 $(WARN) -O1 -g -D_GNU_SOURCE -Iinclude \
	-DINSIGHTFS_VERSION='"$(VERSION)"' $(shell pkg-config --cflags $(PKGS) 2>/dev/null)

build/fuzz/obj/%.o: src/%.c $(wildcard include/insightfs/*.h src/*_int.h) | build/fuzz/obj
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link $(FUZZ_SAN) -c -o $@ $<

build/fuzz/obj:
	mkdir -p $@
.PRECIOUS: build/fuzz/obj/%.o

build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $$(addprefix build/fuzz/obj/,$$(addsuffix .o,$$(FUZZ_DEPS_$$*))) \
		$(wildcard src/*_int.h) | build/fuzz/obj
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer $(FUZZ_SAN) -o $@ $(filter %.c %.o,$^) $(LDLIBS)

fuzz: $(FUZZ_BINS)
	@rm -rf build/fuzz/corpus build/fuzz/crashes && mkdir -p build/fuzz/corpus build/fuzz/crashes
	@cp -R tests/fuzz/corpus/. build/fuzz/corpus/
	@fail=0; for t in $(FUZZ_TARGETS); do \
		mkdir -p build/fuzz/corpus/$$t; \
		echo "== fuzz_$$t: $(FUZZ_SECONDS) s"; \
		if LSAN_OPTIONS=suppressions=$(CURDIR)/tests/fuzz/lsan.supp:print_suppressions=0 \
			build/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=5 -rss_limit_mb=2048 \
			-print_final_stats=1 -artifact_prefix=build/fuzz/crashes/$$t- \
			build/fuzz/corpus/$$t >build/fuzz/fuzz_$$t.log 2>&1; then \
			grep -E '^(Done|stat::(average_exec_per_sec|new_units_added))' build/fuzz/fuzz_$$t.log; \
		else \
			fail=1; tail -n 60 build/fuzz/fuzz_$$t.log; \
			echo "fuzz_$$t FAILED: full log build/fuzz/fuzz_$$t.log, input in build/fuzz/crashes/"; \
		fi; \
	done; exit $$fail

# Installs only what is missing; quiet when everything is there.
deps:
	@missing=""; for p in $(DEBS) $(EXTRA_DEBS); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' \
			|| missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "make deps: installing$$missing"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# redis-server: rows 7g-7h (SPEC 11's fleet rows) start one of their own.
bench-deps:
	@$(MAKE) --no-print-directory deps EXTRA_DEBS="$(BENCH_DEBS) redis-server"

# SPEC 11, a benchmark, never part of `check`: prints a table of measured values, ratios
# and targets (tests/bench/README.md). Exits non-zero only when something broke, not
# when a target is missed. Always the plain build. bench.py itself compiles
# tests/bench/floorfs.c (cc + pkg-config fuse3) into build/bench/floorfs for rows 7a
# and 7h, and starts (and stops) its own redis-server for rows 7g-7h.
# BENCH_ARGS: see bench.py --help.
bench: deps
	@$(MAKE) --no-print-directory bench-deps
	@$(MAKE) --no-print-directory SANITIZE= build/insightfs build/bench/warmread
	/usr/bin/python3 tests/bench/bench.py --bin $(CURDIR)/build/insightfs \
		--warmread $(CURDIR)/build/bench/warmread \
		--floorfs $(CURDIR)/build/bench/floorfs $(BENCH_ARGS)

build/bench/warmread: tests/bench/warmread.c
	@mkdir -p $(@D)
	$(CC) -std=gnu11 $(WARN) -O2 -o $@ $<

# RELIABILITY P6 under valgrind (VALGRIND=1): a finding or a definite leak exits 99, a
# status no test binary or insightfs uses. tests/integration/conftest.py passes the same
# flags (plus a log file per process) for every run of insightfs. Time factor 20 (SPEC 10).
VALGRIND_FLAGS := -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
	--show-leak-kinds=definite --num-callers=40 --vgdb=no \
	--suppressions=$(CURDIR)/tests/valgrind.supp
# SPEC 10's time factor, passed to every test program (unit tests, pytest and the local
# API's own client): 20 under valgrind, 3 under sanitizers, else 1; a value already in
# the environment wins.
# ThreadSanitizer reads its suppressions from here (tests/tsan.supp says why); other builds
# ignore the variable. A value already in the environment wins.
export TSAN_OPTIONS ?= suppressions=$(CURDIR)/tests/tsan.supp
TIME_FACTOR_ENV := INSIGHTFS_TEST_TIME_FACTOR=$${INSIGHTFS_TEST_TIME_FACTOR:-$(if $(VALGRIND),20,$(if $(SANITIZE),3,1))}
VALGRIND_RUN := $(if $(VALGRIND),valgrind $(VALGRIND_FLAGS))

unit: $(UNIT_BINS)
	@fail=0; for t in $(UNIT_BINS); do echo "== $$t"; \
		$(TIME_FACTOR_ENV) $(VALGRIND_RUN) $$t || fail=1; done; exit $$fail

integration: $(B)/insightfs
	$(TIME_FACTOR_ENV) INSIGHTFS_BIN=$(CURDIR)/$(B)/insightfs INSIGHTFS_SANITIZE="$(SANITIZE)" \
		INSIGHTFS_VALGRIND="$(VALGRIND)" \
		$(PYTEST) -q -p no:cacheprovider tests/localapi tests/integration

# RELIABILITY T20: 8 readers under probabilistic faults for SOAK_SECONDS (CI: 120).
SOAK_SECONDS ?= 3600
soak: $(B)/insightfs
	$(TIME_FACTOR_ENV) SOAK_SECONDS=$(SOAK_SECONDS) INSIGHTFS_BIN=$(CURDIR)/$(B)/insightfs \
		INSIGHTFS_SANITIZE="$(SANITIZE)" \
		$(PYTEST) -q -rP -p no:cacheprovider tests/soak

# `deps` must finish before anything is compiled: pkg-config answers need the -dev packages.
check: deps
	@$(MAKE) --no-print-directory all unit
	@$(MAKE) --no-print-directory integration

demo: deps
	@$(MAKE) --no-print-directory all
	/usr/bin/python3 tests/demo.py --bin $(CURDIR)/$(B)/insightfs $(DEMO_ARGS)

# SPEC 2 and 10. The unit's ExecStart and the man page's version are filled in here, so
# the installed unit runs the installed binary whatever PREFIX is (DESTDIR is only where
# the files are staged, never part of a path they name).
install: $(B)/insightfs
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR) $(DESTDIR)$(DOCDIR) $(DESTDIR)$(UNITDIR)
	install -m 0755 $(B)/insightfs $(DESTDIR)$(BINDIR)/insightfs
	sed 's|@VERSION@|$(VERSION)|g' conf/insightfs.1 >$(DESTDIR)$(MANDIR)/insightfs.1
	chmod 0644 $(DESTDIR)$(MANDIR)/insightfs.1
	install -m 0644 conf/insightfs.conf.example $(DESTDIR)$(DOCDIR)/insightfs.conf.example
	sed 's|@BINDIR@|$(BINDIR)|g' conf/insightfs@.service >$(DESTDIR)$(UNITDIR)/insightfs@.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/insightfs@.service

# Only the four files and the doc directory when nothing else is in it: bin/, man1/ and
# systemd/system/ are shared with other packages.
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/insightfs $(DESTDIR)$(MANDIR)/insightfs.1 \
		$(DESTDIR)$(DOCDIR)/insightfs.conf.example $(DESTDIR)$(UNITDIR)/insightfs@.service
	if [ -d $(DESTDIR)$(DOCDIR) ]; then rmdir --ignore-fail-on-non-empty $(DESTDIR)$(DOCDIR); fi

clean:
	rm -rf build
