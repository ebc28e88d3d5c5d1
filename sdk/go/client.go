package fedsync

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a Client.
type Config struct {
	// BaseURL is a regional edge, e.g. http://127.0.0.1:8080.
	BaseURL string
	// Edges, instead of BaseURL, are the regional edges in order of
	// preference (nearest first). The client uses the first and fails over
	// to the next healthy one when RunHeartbeats finds its hub gone
	// (failover.go).
	Edges []string
	// ClientID and ClientSecret get tokens by the client-credentials grant.
	ClientID, ClientSecret string
	// Token, instead of ClientID and ClientSecret, is a bearer token to use as
	// is (it is not refreshed).
	Token string
	// HTTPClient makes the requests (default: a client with a 30 s timeout).
	HTTPClient *http.Client
	// RefreshBefore is how long before its expiry a token is replaced
	// (default 60 s).
	RefreshBefore time.Duration
}

// Client calls one fedsync federation through a regional edge. It is safe for
// concurrent use.
type Client struct {
	cfg  Config
	http *http.Client

	// edges are the regional edges; cur is the index of the one in use.
	edges []string
	cur   atomic.Int32
	fo    failoverState
	// cache is the L1 cache (nil until EnableCache).
	cache *l1Cache

	mu      sync.Mutex
	token   string
	expires time.Time
}

// New returns a client; no request is made until the first call.
func New(cfg Config) *Client {
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if cfg.RefreshBefore <= 0 {
		cfg.RefreshBefore = 60 * time.Second
	}
	edges := cfg.Edges
	if len(edges) == 0 {
		edges = []string{cfg.BaseURL}
	}
	c := &Client{cfg: cfg, http: cfg.HTTPClient, token: cfg.Token}
	for _, e := range edges {
		c.edges = append(c.edges, strings.TrimRight(e, "/"))
	}
	c.fo.init()
	return c
}

// BaseURL is the edge the client calls now.
func (c *Client) BaseURL() string { return c.edges[c.cur.Load()] }

// Token returns a valid bearer token and its expiry (zero for a static
// token), fetching a new one when none is held or it expires within
// RefreshBefore.
func (c *Client) Token(ctx context.Context) (string, time.Time, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cfg.ClientID == "" {
		if c.token == "" {
			return "", time.Time{}, &Error{Status: http.StatusUnauthorized, Code: CodeUnauthenticated, Message: "no token and no client credentials configured"}
		}
		return c.token, time.Time{}, nil
	}
	if c.token != "" && time.Until(c.expires) > c.cfg.RefreshBefore {
		return c.token, c.expires, nil
	}
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {c.cfg.ClientID}, "client_secret": {c.cfg.ClientSecret}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.BaseURL()+"/oauth2/token", strings.NewReader(form.Encode()))
	if err != nil {
		return "", time.Time{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	var out struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if err := c.send(req, &out); err != nil {
		return "", time.Time{}, err
	}
	if out.AccessToken == "" {
		return "", time.Time{}, errors.New("fedsync: token endpoint answered without access_token")
	}
	c.token, c.expires = out.AccessToken, time.Now().Add(time.Duration(out.ExpiresIn)*time.Second)
	return c.token, c.expires, nil
}

// forgetToken drops a token the server refused, so the next call gets a new one.
func (c *Client) forgetToken(tok string) {
	c.mu.Lock()
	if c.token == tok && c.cfg.ClientID != "" {
		c.token = ""
	}
	c.mu.Unlock()
}

// call makes an authenticated JSON request; in (when not nil) is the body and
// out (when not nil) receives the answer. A 401 with a refreshable token is
// tried once more with a new one.
func (c *Client) call(ctx context.Context, method, path string, in, out any) error {
	return c.callHeaders(ctx, method, path, in, out, nil)
}

func (c *Client) callHeaders(ctx context.Context, method, path string, in, out any, hdr http.Header) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("fedsync: encode request: %w", err)
		}
	}
	for attempt := 0; ; attempt++ {
		tok, _, err := c.Token(ctx)
		if err != nil {
			return err
		}
		req, err := http.NewRequestWithContext(ctx, method, c.BaseURL()+path, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		if in != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		for k, v := range hdr {
			req.Header[k] = v
		}
		err = c.send(req, out)
		if CodeOf(err) == CodeUnauthenticated && attempt == 0 && c.cfg.ClientID != "" {
			c.forgetToken(tok)
			continue
		}
		return err
	}
}

// send makes req and decodes a 2xx answer into out, anything else into *Error.
func (c *Client) send(req *http.Request, out any) error {
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("fedsync: %s %s: %w", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("fedsync: read %s: %w", req.URL.Path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return decodeError(resp, b)
	}
	if out == nil || len(b) == 0 {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("fedsync: decode %s: %w", req.URL.Path, err)
	}
	return nil
}
