# insightfs - Cloud Insight dashboards as a read-only FUSE filesystem.
#
#   make              build/insightfs
#   make check        install missing Debian packages, build, run every test
#   make check SANITIZE=address,undefined    the same under ASan+UBSan (build/asan/)
#   make demo         mount the bundled local API, show the tree, unmount
#   make install      $(DESTDIR)$(PREFIX)/bin/insightfs

VERSION := 0.1.0

PREFIX ?= /usr/local
CFLAGS ?= -O2 -g
SANITIZE ?=

PKGS := fuse3 libcurl openssl libconfig json-c
WARN := -Wall -Wextra -Werror -Wshadow -Wno-missing-field-initializers

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

MODULES := log vpath cfg cfg_file cfg_settings cfg_dashboards cfg_dump sign http api cache ns disc fs_ino fs fs_dir fs_mount main
OBJS := $(MODULES:%=$(B)/obj/%.o)

# Each unit test links its module and the modules it needs, nothing else.
UNIT_TESTS := vpath cfg sign http api cache log ns disc
UNIT_DEPS_vpath := vpath
UNIT_DEPS_cfg := cfg cfg_file cfg_settings cfg_dashboards cfg_dump vpath log
UNIT_DEPS_sign := sign
UNIT_DEPS_http := http log
UNIT_DEPS_api := api http sign log
UNIT_DEPS_cache := cache log
UNIT_DEPS_log := log
UNIT_DEPS_ns := ns cfg cfg_file cfg_settings cfg_dashboards cfg_dump vpath log
UNIT_DEPS_disc := disc api http sign $(UNIT_DEPS_ns)
UNIT_BINS := $(UNIT_TESTS:%=$(B)/tests/test_%)

# Debian packages of SPEC section 10: build, then tests.
DEBS := libfuse3-dev fuse3 libcurl4-openssl-dev libssl-dev libconfig-dev pkg-config \
	libjson-c-dev tzdata python3-pytest libcmocka-dev rsync file openssl clang \
	libclang-rt-14-dev valgrind man-db
BENCH_DEBS := httpdirfs rclone

PYTEST := /usr/bin/python3 -m pytest

.PHONY: all deps check unit integration demo install clean bench-deps
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
	$(CC) $(ALL_CFLAGS) $(shell pkg-config --cflags cmocka 2>/dev/null) $(ALL_LDFLAGS) -o $@ $(filter %.c %.o,$^) \
		$(LDLIBS) $(shell pkg-config --libs cmocka 2>/dev/null)

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

bench-deps:
	@$(MAKE) --no-print-directory deps EXTRA_DEBS="$(BENCH_DEBS)"

unit: $(UNIT_BINS)
	@fail=0; for t in $(UNIT_BINS); do echo "== $$t"; $$t || fail=1; done; exit $$fail

integration: $(B)/insightfs
	INSIGHTFS_BIN=$(CURDIR)/$(B)/insightfs INSIGHTFS_SANITIZE="$(SANITIZE)" \
		$(PYTEST) -q -p no:cacheprovider tests/localapi tests/integration

# `deps` must finish before anything is compiled: pkg-config answers need the -dev packages.
check: deps
	@$(MAKE) --no-print-directory all unit
	@$(MAKE) --no-print-directory integration

demo: deps
	@$(MAKE) --no-print-directory all
	/usr/bin/python3 tests/demo.py --bin $(CURDIR)/$(B)/insightfs $(DEMO_ARGS)

install: $(B)/insightfs
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(B)/insightfs $(DESTDIR)$(PREFIX)/bin/insightfs

clean:
	rm -rf build
