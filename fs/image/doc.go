// Package image turns a raw disk (an io.ReaderAt of exact size) into the files
// that a point-in-time directory serves and that `hindsight export` writes:
//
//	<name>.vmdk        VMDK descriptor, ESXi "vmfs" form, pointing at the flat file
//	<name>-flat.vmdk   the raw bytes themselves
//	<name>.vhd         fixed VHD: the raw bytes followed by a 512-byte footer
//
// plus, written as a stream, a streamOptimized VMDK (compressed, zero grains
// left out) for uploads to vSphere and OVF bundles. Nothing here copies the
// disk: the flat and VHD files read through to the caller's ReaderAt.
//
// # Identity
//
// Meta.ID is a stable 16-byte identity chosen by the caller (derived from the
// disk and the journal position). The same image always yields the same
// bytes: ddb.uuid is the ID, the CID is its first four bytes (never the
// reserved ffffffff/fffffffe), ddb.longContentID is the remaining twelve bytes
// followed by the CID (VMware ends longContentID with the CID), and the VHD
// unique id is the ID.
//
// # VMDK descriptor
//
// createType="vmfs" with an extent line `RW <sectors> VMFS "<name>-flat.vmdk"`
// is what ESXi writes for a thick disk and what qemu-img accepts. qemu 7.2
// parses the extent lines with sscanf, which skips newlines, so an extent line
// is counted once more for each blank line right above it (64 MiB shows as 128
// MiB after one, 192 MiB after two); the "# Extent description" comment
// therefore always sits directly above it.
//
// Geometry (ddb.geometry.*) follows VMware: 63 sectors per track, 16 heads for
// IDE and 255 for SCSI adapters, cylinders = sectors / (heads × 63) rounded
// down (ESXi writes 5221 for a 40 GiB lsilogic disk), at least 1. IDE
// cylinders are capped at 65535, the ATA identify field's range (Workstation
// writes 83220 for a 40 GiB IDE disk and VMware's open-vmdk caps every adapter
// at 65535: the value is advisory). ddb.virtualHWVersion is "4", the oldest
// value, so the disk attaches to a VM of any hardware version.
//
// # Fixed VHD
//
// The footer follows Microsoft's VHD specification 1.0 (big-endian fields,
// one's-complement byte-sum checksum, CHS from the specification's algorithm,
// disk type 2). The CHS geometry rarely covers the whole disk (10 MiB + 4 KiB
// gives 301/4/17, 12 KiB short), and qemu (block/vpc.c) sizes the disk by CHS
// unless the creator application is one it knows to use current_size: "win "
// (Hyper-V), "qem2", "d2v ", "tap\0", "CTXS". The footer says "win " / "Wi2k",
// as Hyper-V does, so qemu, Hyper-V and Azure all see exactly Meta.Size while
// the geometry stays what the specification prescribes. The format cannot
// describe more than 2040 GiB; larger disks have no .vhd file.
//
// qemu does not probe a fixed VHD (its probe looks for "conectix" at offset
// 0, where a fixed VHD has data), so `qemu-img` needs `-f vpc` to read one.
//
// # streamOptimized VMDK
//
// Layout, in 512-byte sectors, as the Virtual Disk Format 5.0 note describes:
//
//	0        header: "KDMV", version 3, flags newline-check|compressed|markers,
//	         gdOffset = GD_AT_END (the footer holds the real one),
//	         grainSize 128 (64 KiB), 512 entries per grain table, overHead 128
//	1..20    embedded descriptor (createType="streamOptimized", SPARSE extent)
//	128..    for each non-zero grain, in LBA order: lba u64 | size u32 | zlib
//	         data, padded to a sector; after every 512 grains with any data:
//	         marker(4 sectors, GT) then the grain table
//	         marker(n sectors, GD) then the grain directory
//	         marker(1 sector, FOOTER) then the header again with the real gdOffset
//	         end-of-stream marker (a zero sector)
//
// All-zero grains are not written (grain table entry 0) and grain tables with
// no data are not written (directory entry 0): VMware allocates grain tables
// of stream-optimized disks on demand. The first grain starts at sector 128
// like VMware's own writers. The last grain of a disk whose size is not a
// multiple of 64 KiB holds only the bytes inside the disk. Grains are
// compressed in parallel and written in order.
package image
