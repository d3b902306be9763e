# FR-APIaaS build.  `make` builds build/frapi; `make test` runs every test;
# `make SAN=1 ...` builds the same under AddressSanitizer and
# UndefinedBehaviorSanitizer into build-san/.

ORT_HOME ?= $(CURDIR)/.deps/ort
PKGS     := libmicrohttpd jansson sqlite3 libsodium libjwt liboath vips \
            libcurl libpq libqrencode

CC       ?= cc
CSTD     := -std=c17 -D_GNU_SOURCE
WARN     := -Wall -Wextra -Werror
OPT      ?= -O2 -g
CFLAGS   += $(CSTD) $(WARN) $(OPT) -pthread -MMD -MP -Isrc \
            -I$(ORT_HOME)/include $(shell pkg-config --cflags $(PKGS))
LDLIBS   += -L$(ORT_HOME)/lib -lonnxruntime -Wl,-rpath,$(ORT_HOME)/lib \
            $(shell pkg-config --libs $(PKGS)) -lm -pthread

ifeq ($(SAN),1)
BUILD    := build-san
OPT      := -O1 -g -fno-omit-frame-pointer
CFLAGS   += -fsanitize=address,undefined -fno-sanitize-recover=undefined
LDFLAGS  += -fsanitize=address,undefined
else
BUILD    := build
endif

SRCS     := $(shell find src -name '*.c' ! -name main.c | sort)
OBJS     := $(SRCS:%.c=$(BUILD)/%.o)
LIB      := $(BUILD)/libfrapi.a
BIN      := $(BUILD)/frapi

TEST_SRCS  := $(shell find tests -name 'test_*.c' | sort)
TEST_BINS  := $(TEST_SRCS:%.c=$(BUILD)/%)
TEST_HELP  := $(shell find tests -name '*.c' ! -name 'test_*.c' | sort)
TEST_HOBJS := $(TEST_HELP:%.c=$(BUILD)/%.o)
BENCH_SRCS := $(shell find bench -maxdepth 1 -name '*.c' | sort)
BENCH_BINS := $(BENCH_SRCS:%.c=$(BUILD)/%)
FUZZ_SRCS  := $(shell find fuzz -name 'fuzz_*.c' | sort)
FUZZ_BINS  := $(FUZZ_SRCS:%.c=build-fuzz/%)

.PHONY: all test unit e2e bench fuzz lint format clean deps

all: $(BIN)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIB): $(OBJS)
	@rm -f $@
	$(AR) rcs $@ $^

$(BIN): $(BUILD)/src/main.o $(LIB)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/tests/%: tests/%.c $(LIB) $(TEST_HOBJS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests $(LDFLAGS) $< $(TEST_HOBJS) $(LIB) \
		$(LDLIBS) $(shell pkg-config --libs cmocka) -o $@

$(BUILD)/bench/%: bench/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

# Fuzz targets are built with clang's libFuzzer plus both sanitizers.
FUZZ_CFLAGS := $(CSTD) -g -O1 -Isrc -I$(ORT_HOME)/include \
	$(shell pkg-config --cflags $(PKGS)) \
	-fsanitize=fuzzer,address,undefined
build-fuzz/fuzz/%: fuzz/%.c $(SRCS)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) $< $(SRCS) $(LDLIBS) -o $@

unit: $(TEST_BINS)
bench: $(BENCH_BINS)
fuzz: $(FUZZ_BINS)

test: all unit
	./tests/run.sh

deps:
	./scripts/setup.sh

LINT_FILES := $(shell find src tests bench fuzz -name '*.[ch]' | sort)
lint:
	clang-format --dry-run --Werror $(LINT_FILES)

format:
	clang-format -i $(LINT_FILES)

clean:
	rm -rf build build-san build-fuzz

-include $(OBJS:.o=.d) $(BUILD)/src/main.d
