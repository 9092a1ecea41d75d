# jobq: PGXS build for PostgreSQL 15+
EXTENSION  = jobq
EXTVERSION = $(shell sed -n "s/^default_version[[:space:]]*=[[:space:]]*'\([^']*\)'.*/\1/p" jobq.control)

MODULE_big = jobq
OBJS = src/jobq.o src/guc.o src/slots.o src/floors.o src/wakeup.o src/journal.o src/launcher.o src/worker.o \
       src/schema.o src/claim.o src/finish.o src/retry.o src/prune.o src/requests.o src/execute.o src/session.o src/spi.o src/store.o src/task.o src/control.o src/inplace.o src/queue.o src/limits.o src/depend.o src/api.o src/lease.o src/lease_claim.o src/lease_calls.o src/executors.o

# Install and upgrade scripts: every jobq--*.sql at the top level.
DATA = $(wildcard jobq--*.sql)

PG_CPPFLAGS = -I$(srcdir)/src
PG_CFLAGS = -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare \
            -Wno-missing-field-initializers -MMD -MP
ifeq ($(WERROR),1)
PG_CFLAGS += -Werror
endif

# pg_regress: API outputs, against a temporary instance that preloads jobq.
REGRESS = setup enqueue_errors execute tasks control dedup queues depends security attacks single_worker retention upgrade columns executors
REGRESS_OPTS = --temp-config=$(srcdir)/test/regress.conf \
               --temp-instance=$(CURDIR)/tmp_regress
NO_INSTALLCHECK_OPTS =

# isolation tester: interleavings of enqueue and claim.
ISOLATION = enqueue_visibility two_claimers dedup_race cancel_claim retry_race tenant_locks executor_lease \
            executor_allowance dependent_race
ISOLATION_OPTS = --inputdir=$(srcdir)/test/isolation \
                 --temp-config=$(srcdir)/test/isolation.conf \
                 --temp-instance=$(CURDIR)/tmp_isolation

# TAP: processes, crashes, restarts, reloads, failover.
TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl

EXTRA_CLEAN = src/*.d tmp_regress tmp_isolation output_iso results regression.diffs regression.out

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# Header dependencies: PGXS tracks them only on a server built with
# --enable-depend, and a stale object built with an old layout of a shared
# structure (a worker slot, a claimed job) would read the wrong fields.  The
# compiler writes each object's list (-MMD); the bitcode files, which clang
# builds without those flags, depend on every header.
-include $(OBJS:.o=.d)
$(OBJS:.o=.bc): $(wildcard $(srcdir)/src/*.h)

.PHONY: print-version
print-version:
	@echo $(EXTVERSION)

# The jobq command (cli/): built, installed and cleaned with the extension.
all: cli-all
install: cli-install
clean: cli-clean
.PHONY: cli-all cli-install cli-clean
cli-all:
	$(MAKE) -C $(srcdir)/cli PG_CONFIG=$(PG_CONFIG) WERROR=$(WERROR)
cli-install: cli-all
	$(MAKE) -C $(srcdir)/cli PG_CONFIG=$(PG_CONFIG) install
cli-clean:
	$(MAKE) -C $(srcdir)/cli PG_CONFIG=$(PG_CONFIG) clean
