#!/bin/sh
# Makes tiny.img.gz, the 64 KiB ext4 image that seeds FuzzExt4: 1 KiB
# blocks, no journal, a fstab, a relative and an absolute symlink, a slow
# symlink, a hard link and a file of 8 extents under one extent index block.
set -eu
cd "$(dirname "$0")"
src=$(mktemp -d)
trap 'rm -rf "$src" tiny.img' EXIT
mkdir -p "$src/etc" "$src/srv/site"
echo 'UUID=x / ext4 defaults 0 1' >"$src/etc/fstab"
echo hello >"$src/srv/site/index.html"
ln -s ../srv/site "$src/etc/site"
ln -s /srv/site/index.html "$src/abs"
ln -s "/srv/site/$(printf 'x%.0s' $(seq 80))" "$src/slow"
ln "$src/srv/site/index.html" "$src/hard"
python3 -c "
f = open('$src/srv/frag', 'wb')
for i in range(8):
    f.seek(i * 2048)
    f.write(b'%d' % i * 100)
"
truncate -s 64K tiny.img
E2FSPROGS_FAKE_TIME=1700000000 mkfs.ext4 -q -F -b 1024 -N 32 -O ^has_journal,^resize_inode \
	-U 11111111-2222-3333-4444-555555555555 \
	-E hash_seed=11111111-2222-3333-4444-555555555555,root_owner=0:0 -d "$src" tiny.img
gzip -9n <tiny.img >tiny.img.gz
