package vsphere

import (
	"errors"
	"fmt"

	"github.com/vmware/govmomi/task"
	"github.com/vmware/govmomi/vim25/types"
)

// Errors returned by the package. Check them with errors.Is.
var (
	// ErrLogin: the server refused the credentials.
	ErrLogin = errors.New("vsphere: login failed")
	// ErrNotFound: an inventory object (datacenter, datastore, folder, pool,
	// host, VM) or a Hindsight record of one does not exist.
	ErrNotFound = errors.New("vsphere: not found")
	// ErrExists: a VM or datastore folder of that name exists already.
	ErrExists = errors.New("vsphere: already exists")
	// ErrNotOurs: the object was not created by Hindsight, so Hindsight
	// will not replace, unregister or delete it.
	ErrNotOurs = errors.New("vsphere: not created by hindsight")
	// ErrPoweredOn: the VM must be powered off for this operation.
	ErrPoweredOn = errors.New("vsphere: the VM is powered on")
	// ErrNoSpace: the datastore has too little free space for the disks.
	ErrNoSpace = errors.New("vsphere: not enough free space on the datastore")
	// ErrBadInput: an option or argument cannot be used (a controller type,
	// a disk that does not match the VM's, a missing folder).
	ErrBadInput = errors.New("vsphere: invalid input")
	// ErrNoCBT: the host cannot report changed disk areas for this disk.
	ErrNoCBT = errors.New("vsphere: changed block tracking unavailable")
)

// faultDetail adds the file a task's file fault names to its error, which
// otherwise says only the fault's type.
func faultDetail(err error) error {
	var te task.Error
	if errors.As(err, &te) && te.LocalizedMethodFault != nil {
		if ff, ok := te.LocalizedMethodFault.Fault.(types.BaseFileFault); ok {
			return fmt.Errorf("%w: %s", err, ff.GetFileFault().File)
		}
	}
	return err
}
