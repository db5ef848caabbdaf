// Package vsphere brings Hindsight's instants to VMware vSphere through
// govmomi: copy mode (upload and register), instant recovery (run a VM from
// a copy-on-write clone served over NFS), migration of an instant VM to a
// datastore, failback into an existing VM's disks, and an agentless source
// that journals a VM's disks from snapshots.
//
// # Copy mode
//
// Register uploads each disk of the instant (a disk's, or all of a group's)
// through the datastore's HTTP file access as an ESXi-native pair,
// <vm>/<disk>-flat.vmdk then <vm>/<disk>.vmdk (createType "vmfs"), into a
// folder it creates named after the VM, then creates the VM with one
// controller of the disk's kind per disk (lsilogic, lsisas, buslogic,
// pvscsi, sata, nvme) and the disks attached without a file operation. The
// free space is checked first; a failure on the way removes every file and
// the folder. A VM of the same name is refused unless Replace is set and
// Hindsight made that VM.
//
// # Markers: what is Hindsight's
//
// Every VM Hindsight creates carries ExtraConfig keys hindsight.mode (copy
// or instant), .source, .seq, .time, .disks, .files (the datastore paths it
// wrote) and .dir (the folder it created). List reads them; replace and
// cleanup act only on VMs that carry them, and delete only the files they
// name plus the files vSphere writes into a VM folder (.vmx, .nvram, logs),
// then the folder if nothing else is left. VMs are removed with
// UnregisterVM, never Destroy, which deletes a VM's whole folder.
//
// # Instant recovery and its processes
//
// The journal has one writer per repository: the service (package service,
// `hindsight serve`, or a foreground service of `hindsight vsphere instant`
// when none runs). StartInstant runs in it, with the repository it writes
// and a ServeFunc through which the service serves each clone (its devices,
// its one publisher): this package never wires a writer of its own.
//
//  1. it clones each disk at the instant (store.CloneDisk: copy-on-write,
//     the clone's writes journaled as its own, the source's history never
//     touched);
//  2. it creates <nfs-dir>/<vm>/ and has each clone served there as a FUSE
//     tap, <vm>/<disk>/<disk>-flat.vmdk (read-write) beside a read-only
//     <disk>.vmdk descriptor; the host's .vmx, .nvram and logs are plain
//     files in <vm>/; a probe file checks that the datastore shows the folder;
//  3. it registers the VM from [nfs-datastore] <vm> (no copy, so it is quick
//     whatever the disk size), powers it on if asked, records the instant
//     in <repo>/run/vsphere-instant/<vm>.json, and returns a Running;
//  4. Running.End unregisters the VM, stops serving the taps (their writes
//     made durable), removes the files it and the host wrote, drops the
//     clones unless asked to keep them, unmounts the datastore if it
//     mounted it, and removes the record.
//
// `hindsight vsphere instant-end VM [--keep]` and `migrate` ask the service
// that runs the instant. If the process that served it died (kill -9), the
// record stays: EndInstant ends it from the record in the next writer,
// detaching the dead taps (it needs a vSphere connection to unregister the
// VM). `migrate` ends the instant keeping the clones, uploads their newest
// state in copy mode and re-creates the VM under the same name.
//
// # NFS for real hosts
//
// vcsim maps a NAS datastore's localPath to a local folder; a real ESXi host
// mounts an export. Export the folder given as --nfs-dir with its FUSE
// submounts, for example with nfs-kernel-server (/etc/exports):
//
//	/srv/hindsight-nfs  esxi.example.com(rw,sync,no_subtree_check,no_root_squash,crossmnt,fsid=7)
//
// and serve with --allow-other so the NFS server may open the taps (FUSE
// submounts need an fsid of their own on some kernels; nfs-ganesha's VFS
// FSAL handles them without). Mount it once with `esxcli storage nfs add
// -H <this host> -s /srv/hindsight-nfs -v hindsight-nfs`, or give --nfs-host
// and Hindsight mounts it (and unmounts it at the end when no VM uses it).
//
// # Failback
//
// Writeback overwrites the disks of a powered-off VM without snapshots with
// an instant. With a local mount of the VM's datastore (LocalDir) blocks are
// compared and only differing ones written, in place. Through the
// datastore's HTTP access, which can only replace whole files, the disk is
// compared by ranged reads and uploaded whole unless nothing differs.
//
// # Agentless source
//
// ProtectOnce snapshots a VM (quiesced if asked; crash-consistent when the
// quiesce fails), reads each disk of the snapshot through the datastore's
// HTTP access, and journals what differs from the target's newest state as
// one point of the target's timeline, bookmarked vsphere-<vm>-<time> with
// kind application (quiesced) or crash, and the Capture report (method per
// disk, change IDs, notes) as the bookmark's info; the snapshot is removed
// whatever happens. When the previous capture left a change ID and is still
// the timeline's newest point, only the areas QueryChangedDiskAreas reports
// are read (the ChangeTracker interface); otherwise, or when the host has no
// changed block tracking, the whole disk is read and compared by hash.
//
// # Credentials
//
// Config takes the URL (user information allowed, as GOVC_URL), user and
// password; the URL is stripped of them before any request, so neither
// errors nor logs can show the password. TLS is verified unless Insecure;
// CAFile adds trusted CAs.
package vsphere
