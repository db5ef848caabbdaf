// Package tests holds Hindsight's end-to-end tests: they build the real
// binary and drive it against real components (FUSE mounts, loop devices,
// ext4, qemu-img), cleaning up every mount, loop device and process even when
// a test fails. Run them with `make test` (as root, which they need for loop
// devices and mounts).
package tests
