// Package proc reads process states from /proc, for tests that must see
// processes stop or die: a hook's process group after a timeout, a
// PostgreSQL server paused for a copy.
package proc

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Stat is what /proc/PID/stat says of a process.
type Stat struct {
	State      string // R, S, D, T (stopped), Z (zombie), …
	PPID, PGID int
}

// Read returns pid's Stat, and false when the process does not exist.
func Read(pid int) (Stat, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Stat{}, false
	}
	// The command name, in parentheses, may hold spaces: fields follow the last ')'.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 3 {
		return Stat{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	pgid, _ := strconv.Atoi(f[2])
	return Stat{State: f[0], PPID: ppid, PGID: pgid}, true
}

// Alive says whether pid exists and is not a zombie.
func Alive(pid int) bool {
	s, ok := Read(pid)
	return ok && s.State != "Z"
}

// All lists the processes for which keep returns true.
func All(keep func(pid int, s Stat) bool) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if s, ok := Read(pid); ok && keep(pid, s) {
			pids = append(pids, pid)
		}
	}
	return pids
}
