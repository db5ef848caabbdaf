package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// interspersed lets flags follow positional arguments, as in
// `hindsight import web base.img --at -15m` and `hindsight points web --json`,
// which urfave/cli v2 would otherwise take as positional arguments. It moves
// global flags before the command and the command's own flags before its
// arguments, using the flag definitions to know which flags take a value (so
// that `--at -15m` keeps its value). Everything after `--` stays in place.
func interspersed(app *cli.App, args []string) []string {
	if len(args) == 0 {
		return args
	}
	global := []string{args[0]}
	var (
		path  []string // command names
		flags []string // the command's flags
		pos   []string
		cmds  = app.Commands
		defs  = flagArity(app.Flags)
		cmdFs = map[string]bool{}
	)
	for i := 1; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i:]...)
			break
		}
		if name, ok := flagName(a); ok {
			dst := &flags
			takes, isGlobal := defs[name]
			if !isGlobal || cmdFs[name] {
				var known bool
				if takes, known = cmdFs[name]; !known {
					// A subcommand's flag given before the subcommand
					// (vsphere --url U list): its arity comes from below.
					takes = descendantArity(cmds)[name]
				}
			} else {
				dst = &global
			}
			*dst = append(*dst, a)
			if takes && !strings.Contains(a, "=") && i+1 < len(args) {
				i++
				*dst = append(*dst, args[i])
			}
			continue
		}
		if len(pos) == 0 {
			if c := findCommand(cmds, a); c != nil {
				path = append(path, a)
				cmds = c.Subcommands
				for n, takes := range flagArity(c.Flags) {
					cmdFs[n] = takes
				}
				continue
			}
		}
		pos = append(pos, a)
	}
	out := append(global, path...)
	out = append(out, flags...)
	return append(out, pos...)
}

// flagName recognises -x, --name and --name=value; "-" alone and negative
// durations such as -15m are values, not flags.
func flagName(a string) (string, bool) {
	if len(a) < 2 || a[0] != '-' {
		return "", false
	}
	name := strings.TrimLeft(a, "-")
	if name == "" || (name[0] >= '0' && name[0] <= '9') {
		return "", false
	}
	name, _, _ = strings.Cut(name, "=")
	return name, true
}

// flagArity maps every name and alias of flags to whether it takes a value.
func flagArity(flags []cli.Flag) map[string]bool {
	m := map[string]bool{}
	for _, f := range flags {
		_, isBool := f.(*cli.BoolFlag)
		for _, n := range f.Names() {
			m[n] = !isBool
		}
	}
	return m
}

// descendantArity is flagArity over every command in cmds and below.
func descendantArity(cmds []*cli.Command) map[string]bool {
	m := map[string]bool{}
	for _, c := range cmds {
		for n, takes := range flagArity(c.Flags) {
			m[n] = takes
		}
		for n, takes := range descendantArity(c.Subcommands) {
			m[n] = takes
		}
	}
	return m
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}
