package vsphere

import (
	"context"
	"errors"
	"fmt"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// nasDatastore finds the NFS datastore, or mounts it on the placement's
// host when it is missing (created reports that, for the teardown).
func (c *Client) nasDatastore(ctx context.Context, pl placement, n NFS) (*datastore, bool, error) {
	if n.Datastore == "" {
		return nil, false, fmt.Errorf("%w: no --nfs-datastore", ErrBadInput)
	}
	ds, err := c.datastore(ctx, n.Datastore)
	if err == nil {
		return ds, false, nil
	}
	if !errors.Is(err, ErrNotFound) {
		return nil, false, err
	}
	if n.RemoteHost == "" {
		return nil, false, fmt.Errorf("%w: datastore %s is not mounted; give --nfs-host (this machine's address as the host sees it) to mount it", ErrNotFound, n.Datastore)
	}
	host := pl.host
	if host == nil {
		if host, err = c.poolHost(ctx, pl.pool); err != nil {
			return nil, false, err
		}
	}
	dss, err := host.ConfigManager().DatastoreSystem(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("vsphere: datastore system of %s: %w", host.Name(), err)
	}
	spec := types.HostNasVolumeSpec{
		RemoteHost: n.RemoteHost,
		RemotePath: n.RemotePath,
		LocalPath:  n.LocalPath,
		AccessMode: string(types.HostMountModeReadWrite),
		Type:       string(types.HostFileSystemVolumeFileSystemTypeNFS),
	}
	if spec.RemotePath == "" {
		spec.RemotePath = n.Dir
	}
	if spec.LocalPath == "" {
		spec.LocalPath = n.Datastore
	}
	obj, err := dss.CreateNasDatastore(ctx, spec)
	if err != nil {
		return nil, false, fmt.Errorf("vsphere: mount NFS %s:%s as %s: %w", spec.RemoteHost, spec.RemotePath, n.Datastore, err)
	}
	var m mo.Datastore
	if err := obj.Properties(ctx, obj.Reference(), []string{"name"}, &m); err != nil {
		return nil, true, fmt.Errorf("vsphere: new datastore: %w", err)
	}
	if m.Name != n.Datastore {
		c.logf("vsphere: the host named the new datastore %s", m.Name)
	}
	ds, err = c.datastore(ctx, m.Name)
	if err != nil {
		return nil, true, err
	}
	return ds, true, nil
}

// poolHost picks a host of the pool's cluster (or standalone host).
func (c *Client) poolHost(ctx context.Context, pool *object.ResourcePool) (*object.HostSystem, error) {
	owner, err := pool.Owner(ctx)
	if err != nil {
		return nil, fmt.Errorf("vsphere: owner of pool %s: %w", pool.InventoryPath, err)
	}
	var cr mo.ComputeResource
	if err := c.vc.RetrieveOne(ctx, owner.Reference(), []string{"host"}, &cr); err != nil || len(cr.Host) == 0 {
		return nil, fmt.Errorf("%w: no host behind pool %s (give --host)", ErrNotFound, pool.InventoryPath)
	}
	return object.NewHostSystem(c.Vim(), cr.Host[0]), nil
}

// unmountNAS removes the datastore Hindsight mounted, if no VM uses it.
func (c *Client) unmountNAS(ctx context.Context, name string) (bool, error) {
	ds, err := c.datastore(ctx, name)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var m mo.Datastore
	if err := ds.Properties(ctx, ds.Reference(), []string{"vm", "host"}, &m); err != nil {
		return false, err
	}
	if len(m.Vm) > 0 {
		c.logf("vsphere: datastore %s stays mounted: %d VMs use it", name, len(m.Vm))
		return false, nil
	}
	for _, h := range m.Host {
		dss, err := object.NewHostSystem(c.Vim(), h.Key).ConfigManager().DatastoreSystem(ctx)
		if err != nil {
			return false, err
		}
		if err := dss.Remove(ctx, ds.Datastore); err != nil {
			// The simulator lacks RemoveDatastore; Destroy unmounts a NAS
			// datastore there and deletes no file.
			task, derr := ds.Destroy(ctx)
			if derr == nil {
				derr = task.Wait(ctx)
			}
			if derr != nil {
				return false, fmt.Errorf("vsphere: unmount datastore %s: %w", name, errors.Join(err, derr))
			}
			return true, nil
		}
	}
	return true, nil
}
