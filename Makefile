# Hindsight: continuous data protection. `make help` lists the targets.
GO       ?= go
BIN      := bin/hindsight
PKGS     := ./...
# Debian packages the tests drive: FUSE, qemu-img/qemu-io/qemu-nbd, mkfs.ext4/e2fsck, sfdisk,
# losetup/fsfreeze, sqlite3, nbdinfo/nbdcopy; mkfs.xfs, mkfs.btrfs, ntfs-3g/mkfs.ntfs, mkfs.vfat/mtools
# for file-level recovery; postgresql (postgres, pgbench, pg_amcheck) for the quiesce agents.
APT_PKGS := fuse3 qemu-utils e2fsprogs fdisk util-linux b3sum sqlite3 libnbd-bin xfsprogs btrfs-progs ntfs-3g dosfstools mtools postgresql jq
# and what only the benchmarks use (fio for bench-write.sh and bench-service.sh,
# qemu-storage-daemon for bench-service.sh's peer)
BENCH_PKGS := fio qemu-system-common

# how long make fuzz runs each fuzz target
FUZZTIME ?= 30s

.PHONY: help build test deps lint bench bench-service soak fuzz demo clean ci

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## build ./bin/hindsight
	$(GO) build -o $(BIN) ./cmd/hindsight

deps: ## install the Debian packages the tests need (when missing)
	@missing=""; for p in $(APT_PKGS) $(EXTRA_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@modprobe fuse 2>/dev/null || true

test: deps ## install test dependencies, then run every test with the race detector
	$(GO) test -race -count=1 -timeout 18m $(PKGS)

lint: ## gofmt, go vet, go mod tidy check
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	@cp go.mod /tmp/hs-go.mod.bak; cp go.sum /tmp/hs-go.sum.bak; $(GO) mod tidy; \
	if ! git diff --quiet -- go.mod go.sum; then echo "go.mod/go.sum not tidy"; git diff -- go.mod go.sum | head -20; \
	  cp /tmp/hs-go.mod.bak go.mod; cp /tmp/hs-go.sum.bak go.sum; exit 1; fi

bench: build ## benchmarks; figures go into docs/PERFORMANCE.md
	@$(MAKE) --no-print-directory deps EXTRA_PKGS="$(BENCH_PKGS)"
	$(GO) test -run '^$$' -bench . -benchtime 3x ./store/ ./fs/
	TMPDIR=/var/tmp $(GO) test -run '^$$' -bench DeviceWrite4K -benchtime 300000x ./cdp/
	TMPDIR=/var/tmp $(GO) test -run '^$$' -bench Write4KDuringGC -benchtime 20000x ./cdp/
	TMPDIR=/var/tmp $(GO) test -run '^$$' -bench TapWrite4KSync64 -benchtime 100000x ./fs/tap/
	bash scripts/bench-read.sh
	bash scripts/bench-write.sh
	bash scripts/bench-quiesce.sh
	bash scripts/bench-service.sh

bench-service: build ## the service: four disks at once vs one, beside qemu-storage-daemon; 16 disks' memory and idle CPU
	@$(MAKE) --no-print-directory deps EXTRA_PKGS="$(BENCH_PKGS)"
	bash scripts/bench-service.sh

soak: deps ## long runs (minutes, not in make test): the by-time tree over 10 million points, each ls timed
	HINDSIGHT_BYTIME_POINTS=10000000 $(GO) test -count=1 -timeout 60m -run 'TestByTimeExact' -v ./fs/

fuzz: ## run every fuzz target in the module for FUZZTIME each (default 30s; not in make test)
	@failed=""; n=0; \
	for dir in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -r -n1 dirname | sort -u); do \
		names=$$($(GO) test -list '^Fuzz' $$dir) || { echo "$$names"; exit 1; }; \
		for name in $$(echo "$$names" | grep '^Fuzz'); do \
			n=$$((n+1)); echo "== $$dir $$name for $(FUZZTIME)"; \
			$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$dir || failed="$$failed $$dir:$$name"; \
		done; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz: $$n targets; failed:$$failed (a new failing input is kept in its testdata/fuzz)"; exit 1; fi; \
	echo "fuzz: $$n targets, none failed"

demo: build deps ## the service protects a disk with ext4, a file changes, an older instant is opened and the file restored
	bash scripts/demo.sh

ci: lint test ## what CI runs

clean: ## remove build output
	rm -rf bin
