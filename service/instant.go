package service

import (
	"context"
	"net/http"

	"github.com/hindsight-cdp/hindsight/cdp"
)

// InstantRunner runs vSphere instant recoveries inside the service.
type InstantRunner interface{}

// instant is a running instant recovery.
type instant struct{ devices []*cdp.Device }

func (in *instant) devs() []*cdp.Device { return in.devices }

// instantsBack brings back recorded instant recoveries.
func (s *Service) instantsBack(ctx context.Context) {}

// endInstants stops the instant recoveries' front ends.
func (s *Service) endInstants() {}

// instantRoutes adds the instant recovery requests.
func (s *Service) instantRoutes(mux *http.ServeMux) {}
