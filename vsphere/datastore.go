package vsphere

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"sync/atomic"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// datastore is a datastore with what the package asks of it.
type datastore struct {
	*object.Datastore
	c *Client
}

func (c *Client) datastore(ctx context.Context, name string) (*datastore, error) {
	if name == "" {
		return nil, fmt.Errorf("%w: no datastore given", ErrBadInput)
	}
	ds, err := c.finder.Datastore(ctx, name)
	if err != nil {
		return nil, notFound(err, "datastore", name)
	}
	return &datastore{Datastore: ds, c: c}, nil
}

// summary is the datastore's summary (free space, accessibility, URL).
func (ds *datastore) summary(ctx context.Context) (types.DatastoreSummary, error) {
	var m mo.Datastore
	if err := ds.Properties(ctx, ds.Reference(), []string{"summary"}, &m); err != nil {
		return types.DatastoreSummary{}, fmt.Errorf("vsphere: datastore %s: %w", ds.Name(), err)
	}
	return m.Summary, nil
}

// checkSpace refuses when need bytes do not fit in the free space.
func (ds *datastore) checkSpace(ctx context.Context, need int64) error {
	s, err := ds.summary(ctx)
	if err != nil {
		return err
	}
	if !s.Accessible {
		return fmt.Errorf("vsphere: datastore %s is not accessible", ds.Name())
	}
	if s.FreeSpace < need {
		return fmt.Errorf("%w: %s has %d bytes free, the disks need %d", ErrNoSpace, ds.Name(), s.FreeSpace, need)
	}
	return nil
}

// exists reports whether the datastore holds file (a path inside it).
func (ds *datastore) exists(ctx context.Context, file string) (bool, error) {
	_, err := ds.Stat(ctx, file)
	var nf object.DatastoreNoSuchFileError
	var nd object.DatastoreNoSuchDirectoryError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &nf), errors.As(err, &nd):
		return false, nil
	}
	return false, fmt.Errorf("vsphere: stat %s: %w", ds.Path(file), err)
}

// mkdir creates a folder on the datastore.
func (ds *datastore) mkdir(ctx context.Context, dir string) error {
	fm := object.NewFileManager(ds.c.Vim())
	if err := fm.MakeDirectory(ctx, ds.Path(dir), ds.c.dc, false); err != nil {
		return fmt.Errorf("vsphere: create folder %s: %w", ds.Path(dir), err)
	}
	return nil
}

// remove deletes one datastore path (a "[ds] dir/file" string).
func (c *Client) remove(ctx context.Context, dsPath string) error {
	fm := object.NewFileManager(c.Vim())
	task, err := fm.DeleteDatastoreFile(ctx, dsPath, c.dc)
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil && !types.IsFileNotFound(err) {
		return fmt.Errorf("vsphere: delete %s: %w", dsPath, err)
	}
	return nil
}

// isEmptyDir reports whether a datastore folder holds no file.
func (ds *datastore) isEmptyDir(ctx context.Context, dir string) (bool, error) {
	b, err := ds.Browser(ctx)
	if err != nil {
		return false, err
	}
	task, err := b.SearchDatastore(ctx, ds.Path(dir), &types.HostDatastoreBrowserSearchSpec{MatchPattern: []string{"*"}})
	if err != nil {
		return false, err
	}
	info, err := task.WaitForResult(ctx, nil)
	if err != nil {
		return false, err
	}
	res, _ := info.Result.(types.HostDatastoreBrowserSearchResults)
	return len(res.File) == 0, nil
}

// upload writes size bytes from r to file on the datastore (HTTP PUT
// through /folder), counting them into sent.
func (ds *datastore) upload(ctx context.Context, file string, r io.Reader, size int64, sent *atomic.Int64) error {
	p := soap.DefaultUpload
	p.ContentLength = size
	if sent != nil {
		r = &countReader{r: r, n: sent}
	}
	if err := ds.Upload(ctx, r, file, &p); err != nil {
		return fmt.Errorf("vsphere: upload %s: %w", ds.Path(file), err)
	}
	return nil
}

type countReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// httpFile reads a datastore file with HTTP range requests: the datastore's
// file access, which needs no agent on the host.
type httpFile struct {
	ds   *datastore
	file string
	size int64
}

// openHTTP opens file for ranged reads; its size comes from the datastore.
func (ds *datastore) openHTTP(ctx context.Context, file string) (*httpFile, error) {
	fi, err := ds.Stat(ctx, file)
	if err != nil {
		return nil, fmt.Errorf("vsphere: stat %s: %w", ds.Path(file), err)
	}
	return &httpFile{ds: ds, file: file, size: fi.GetFileInfo().FileSize}, nil
}

// ReadRange reads len(p) bytes at off.
func (h *httpFile) ReadRange(ctx context.Context, p []byte, off int64) error {
	if len(p) == 0 {
		return nil
	}
	u := h.ds.NewURL(h.file)
	param := soap.DefaultDownload
	param.Headers = map[string]string{"Range": fmt.Sprintf("bytes=%d-%d", off, off+int64(len(p))-1)}
	res, err := h.ds.c.Vim().DownloadRequest(ctx, u, &param)
	if err != nil {
		return fmt.Errorf("vsphere: read %s at %d: %w", h.ds.Path(h.file), off, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusPartialContent && res.StatusCode != http.StatusOK {
		return fmt.Errorf("vsphere: read %s at %d: %s", h.ds.Path(h.file), off, res.Status)
	}
	if res.StatusCode == http.StatusOK && off > 0 { // the server ignored the range
		if _, err := io.CopyN(io.Discard, res.Body, off); err != nil {
			return fmt.Errorf("vsphere: read %s at %d: %w", h.ds.Path(h.file), off, err)
		}
	}
	if _, err := io.ReadFull(res.Body, p); err != nil {
		return fmt.Errorf("vsphere: read %s at %d: %w", h.ds.Path(h.file), off, err)
	}
	return nil
}

// dsPath joins a datastore name and a path inside it as "[ds] dir/file".
func dsPath(ds, p string) string {
	return (&object.DatastorePath{Datastore: ds, Path: p}).String()
}

// flatPath is the extent beside a "[ds] dir/name.vmdk" descriptor.
func flatPath(desc string) string {
	ext := path.Ext(desc)
	return desc[:len(desc)-len(ext)] + "-flat" + ext
}
