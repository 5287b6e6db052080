// Command gcpeer is a real Go groupcache peer for herdcache's interoperability tests.
//
// It serves one groupcache group over groupcache's HTTPPool and loads misses from an HTTP
// origin, so that a test can run a single origin that every process of a mixed ring (Go and
// herdcache) loads from and that counts loads per key cluster-wide.
//
// One listener serves:
//
//	/_groupcache/{group}/{key}  groupcache's peer protocol (HTTPPool, unchanged)
//	/get?key=K                  group.Get(K): 200 with the value, 500 with the error text
//	/stats                      the group's Stats and cache stats as JSON (snake_case names)
//	/peers                      PUT or POST a comma-separated list of base URLs: pool.Set
//
// With -tls-cert, -tls-key and -tls-ca the peer protocol is HTTPS with mutual TLS: the
// listener asks every client for a certificate signed by the CA (and refuses one without),
// and requests to other peers present this peer's certificate and trust only the CA (Go
// checks that a peer's certificate names its URL's host). The base URL is then https://, and
// /get, /stats and /peers move to a plain HTTP listener of their own on loopback (-control),
// so that a test drives the peer without a certificate.
//
// Once listening it prints "ready <base URL>" on stdout, or with TLS
// "ready <base URL> control <control URL>". It exits when its stdin reaches EOF:
// its parent holds the other end of a pipe, so the parent's death (even SIGKILL) ends it too.
// Requests to other peers (HTTPPool's client) give up after -peer-timeout, body included.
// Built in GOPATH mode:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode:$REPO/tests/go go build gcpeer
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/golang/groupcache"
)

// maxValueBytes bounds what the origin may answer for one key and what /peers may receive.
const maxValueBytes = 16 << 20

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (port 0: a free one)")
	self := flag.String("self", "", "this peer's base URL (default: http://<bound address>)")
	peers := flag.String("peers", "", "comma-separated base URLs of the ring's members, this one included (default: this peer alone)")
	groupName := flag.String("group", "ks", "the groupcache group's name")
	cacheBytes := flag.Int64("cache-bytes", 64<<20, "the group's cache budget in bytes")
	origin := flag.String("origin", "", "origin URL template: {key} is replaced by the percent-encoded key (required)")
	timeout := flag.Duration("origin-timeout", 10*time.Second, "timeout of one origin request")
	peerTimeout := flag.Duration("peer-timeout", 10*time.Second, "timeout of one request to another peer, body included")
	tlsCert := flag.String("tls-cert", "", "PEM certificate for mutual TLS between peers (with -tls-key and -tls-ca)")
	tlsKey := flag.String("tls-key", "", "PEM private key of -tls-cert")
	tlsCA := flag.String("tls-ca", "", "PEM CA certificate that peers' certificates must chain to")
	control := flag.String("control", "127.0.0.1:0", "with TLS: address of the plain HTTP listener for /get, /stats, /peers")
	flag.Parse()
	if !strings.Contains(*origin, "{key}") {
		log.Fatalf("gcpeer: -origin must be a URL template containing {key}, got %q", *origin)
	}

	mutualTLS, err := loadTLS(*tlsCert, *tlsKey, *tlsCA)
	if err != nil {
		log.Fatalf("gcpeer: %v", err)
	}
	listener, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("gcpeer: listen: %v", err)
	}
	scheme := "http://"
	if mutualTLS != nil {
		scheme = "https://"
	}
	base := *self
	if base == "" {
		base = scheme + listener.Addr().String()
	}

	go exitOnStdinEOF()

	pool := groupcache.NewHTTPPoolOpts(base, nil)
	// Before Set: each peer's getter copies the transport. The default one has no timeout,
	// so a peer that accepts and never answers would hold a fetch for ever.
	var peerTransport http.RoundTripper = http.DefaultTransport
	if mutualTLS != nil {
		clientTransport := http.DefaultTransport.(*http.Transport).Clone()
		clientTransport.TLSClientConfig = &tls.Config{
			Certificates: mutualTLS.Certificates,
			RootCAs:      mutualTLS.ClientCAs,
			MinVersion:   tls.VersionTLS12,
		}
		peerTransport = clientTransport
	}
	transport := deadlineTransport{base: peerTransport, timeout: *peerTimeout}
	pool.Transport = func(context.Context) http.RoundTripper { return transport }
	pool.Set(peerList(*peers, base)...)
	client := &http.Client{Timeout: *timeout}
	group := groupcache.NewGroup(*groupName, *cacheBytes, groupcache.GetterFunc(
		func(ctx context.Context, key string, dest groupcache.Sink) error {
			value, err := fetch(ctx, client, *origin, key)
			if err != nil {
				return err
			}
			return dest.SetBytes(value)
		}))

	peerMux := http.NewServeMux()
	peerMux.Handle("/_groupcache/", pool)
	mux := peerMux
	if mutualTLS != nil {
		mux = http.NewServeMux()
	}
	mux.HandleFunc("/get", func(w http.ResponseWriter, r *http.Request) {
		key, ok := r.URL.Query()["key"]
		if !ok || len(key) != 1 {
			http.Error(w, "exactly one key= parameter", http.StatusBadRequest)
			return
		}
		var value []byte
		if err := group.Get(r.Context(), key[0], groupcache.AllocatingByteSliceSink(&value)); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(value)
	})
	mux.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(statsOf(group, base))
	})
	mux.HandleFunc("/peers", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPut && r.Method != http.MethodPost {
			http.Error(w, "PUT or POST a comma-separated list of base URLs", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxValueBytes))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		pool.Set(peerList(string(body), base)...)
		w.WriteHeader(http.StatusNoContent)
	})

	if mutualTLS == nil {
		fmt.Printf("ready %s\n", base)
		os.Stdout.Sync()
		log.Fatal(http.Serve(listener, mux))
	}
	controlListener, err := net.Listen("tcp", *control)
	if err != nil {
		log.Fatalf("gcpeer: listen -control: %v", err)
	}
	go func() { log.Fatal(http.Serve(controlListener, mux)) }()
	fmt.Printf("ready %s control http://%s\n", base, controlListener.Addr())
	os.Stdout.Sync()
	log.Fatal(http.Serve(tls.NewListener(listener, mutualTLS), peerMux))
}

// loadTLS is the server side of mutual TLS from the three files (nil when none is given):
// this peer's certificate, and clients' certificates required and verified against the CA.
func loadTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	if certFile == "" && keyFile == "" && caFile == "" {
		return nil, nil
	}
	if certFile == "" || keyFile == "" || caFile == "" {
		return nil, errors.New("-tls-cert, -tls-key and -tls-ca go together")
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("-tls-cert/-tls-key: %v", err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("-tls-ca: %v", err)
	}
	cas := x509.NewCertPool()
	if !cas.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("-tls-ca %s: no PEM certificate", caFile)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{pair},
		ClientCAs:    cas,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}, nil
}

// exitOnStdinEOF reads stdin to its end, then exits the process.
func exitOnStdinEOF() {
	io.Copy(io.Discard, os.Stdin)
	log.Print("gcpeer: stdin closed (the parent is gone): exiting")
	os.Exit(0)
}

// deadlineTransport gives each request at most timeout, its response body included.
type deadlineTransport struct {
	base    http.RoundTripper
	timeout time.Duration
}

func (t deadlineTransport) RoundTrip(request *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(request.Context(), t.timeout)
	response, err := t.base.RoundTrip(request.WithContext(ctx))
	if err != nil {
		cancel()
		return nil, err
	}
	response.Body = cancelOnClose{ReadCloser: response.Body, cancel: cancel}
	return response, nil
}

// cancelOnClose releases a request's deadline once its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (body cancelOnClose) Close() error {
	err := body.ReadCloser.Close()
	body.cancel()
	return err
}

// peerList splits a comma-separated list of base URLs; an empty list is this peer alone.
func peerList(list, self string) []string {
	var peers []string
	for _, peer := range strings.Split(list, ",") {
		if peer = strings.TrimSpace(peer); peer != "" {
			peers = append(peers, peer)
		}
	}
	if len(peers) == 0 {
		return []string{self}
	}
	return peers
}

// escapeKey percent-encodes every byte of key outside the unreserved set (space is %20).
func escapeKey(key string) string {
	return strings.ReplaceAll(url.QueryEscape(key), "+", "%20")
}

// fetch loads key from the origin: a 2xx answer is the value, anything else an error.
func fetch(ctx context.Context, client *http.Client, template, key string) ([]byte, error) {
	target := strings.ReplaceAll(template, "{key}", escapeKey(key))
	request, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, err
	}
	response, err := client.Do(request)
	if err != nil {
		return nil, err
	}
	defer response.Body.Close()
	body, err := io.ReadAll(io.LimitReader(response.Body, maxValueBytes+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxValueBytes {
		return nil, errors.New("origin value over the size limit")
	}
	if response.StatusCode < 200 || response.StatusCode > 299 {
		return nil, fmt.Errorf("origin answered %s for %q", response.Status, key)
	}
	return body, nil
}

// cacheStats is groupcache.CacheStats with snake_case names.
type cacheStats struct {
	Bytes     int64 `json:"bytes"`
	Items     int64 `json:"items"`
	Gets      int64 `json:"gets"`
	Hits      int64 `json:"hits"`
	Evictions int64 `json:"evictions"`
}

// stats is a group's counters under groupcache's names, as herdcache node reports them too.
type stats struct {
	Self           string     `json:"self"`
	Group          string     `json:"group"`
	Gets           int64      `json:"gets"`
	CacheHits      int64      `json:"cache_hits"`
	PeerLoads      int64      `json:"peer_loads"`
	PeerErrors     int64      `json:"peer_errors"`
	Loads          int64      `json:"loads"`
	LoadsDeduped   int64      `json:"loads_deduped"`
	LocalLoads     int64      `json:"local_loads"`
	LocalLoadErrs  int64      `json:"local_load_errs"`
	ServerRequests int64      `json:"server_requests"`
	MainCache      cacheStats `json:"main_cache"`
	HotCache       cacheStats `json:"hot_cache"`
}

func statsOf(group *groupcache.Group, self string) stats {
	convert := func(c groupcache.CacheStats) cacheStats {
		return cacheStats{Bytes: c.Bytes, Items: c.Items, Gets: c.Gets, Hits: c.Hits, Evictions: c.Evictions}
	}
	s := &group.Stats
	return stats{
		Self:           self,
		Group:          group.Name(),
		Gets:           s.Gets.Get(),
		CacheHits:      s.CacheHits.Get(),
		PeerLoads:      s.PeerLoads.Get(),
		PeerErrors:     s.PeerErrors.Get(),
		Loads:          s.Loads.Get(),
		LoadsDeduped:   s.LoadsDeduped.Get(),
		LocalLoads:     s.LocalLoads.Get(),
		LocalLoadErrs:  s.LocalLoadErrs.Get(),
		ServerRequests: s.ServerRequests.Get(),
		MainCache:      convert(group.CacheStats(groupcache.MainCache)),
		HotCache:       convert(group.CacheStats(groupcache.HotCache)),
	}
}
