package main

import (
	"reflect"
	"strings"
	"testing"
)

func TestInterspersed(t *testing.T) {
	app := newApp()
	cases := []struct{ in, want string }{
		{"hs disk create web --size 2G", "hs disk create --size 2G web"},
		{"hs --repo R import web base.img --at -15m", "hs --repo R import --at -15m web base.img"},
		{"hs points web --json --since -1h", "hs --json points --since -1h web"},
		{"hs export web --out - --format=vhd -f raw", "hs export --out - --format=vhd -f raw web"},
		{"hs -r R bookmark web nightly --at=@1764065730", "hs -r R bookmark --at=@1764065730 web nightly"},
		{"hs import web -- --odd-name", "hs import web -- --odd-name"},
		{"hs mount /mnt/hs --allow-other", "hs mount --allow-other /mnt/hs"},
		{"hs disk list", "hs disk list"},
		{"hs vsphere --url U list --json", "hs --json vsphere list --url U"},
		{"hs bookmark db-vm n --consistency application --agent postgres --freeze /srv", "hs bookmark --consistency application --agent postgres --freeze /srv db-vm n"},
		{"hs policy set web --keep-all 24h --monthly 24m", "hs policy set --keep-all 24h --monthly 24m web"},
		{"hs policy show web --json", "hs --json policy show web"},
		{"hs prune web --dry-run --json --now -1d", "hs --json prune --dry-run --now -1d web"},
		{"hs gc --max-unused 25% --dry-run", "hs gc --max-unused 25% --dry-run"},
		{"hs bookmark web keep-forever --pin", "hs bookmark --pin web keep-forever"},
	}
	for _, c := range cases {
		got := interspersed(app, strings.Fields(c.in))
		if want := strings.Fields(c.want); !reflect.DeepEqual(got, want) {
			t.Errorf("%q → %q, want %q", c.in, got, want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"4096": 4096, "4K": 4096, "2G": 2 << 30, "2GiB": 2 << 30, "1.5M": 3 << 19, "512m": 512 << 20, "1T": 1 << 40} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "0", "-1G", "lots", "1.3", "2X"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) accepted", bad)
		}
	}
}
