package broadcaster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"syscall"
	"time"

	"github.com/fedsync/fedsync/libs/apierr"
)

// CallbackPolicy says which addresses webhooks may call. By default only
// public addresses: loopback, link-local (cloud metadata at 169.254.169.254),
// private (RFC 1918, fc00::/7, 100.64/10: the mesh's own pods and services),
// unspecified and multicast addresses are refused, at registration and again
// on every connection, so a name that later resolves inward (DNS rebinding)
// or a redirect gets nowhere. Allow opens ranges (a test receiver on
// 127.0.0.1, a partner network).
type CallbackPolicy struct {
	Allow []netip.Prefix
}

var internalRanges = func() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7", "0.0.0.0/8"} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}()

// CheckIP refuses an address the policy does not let webhooks reach.
func (p CallbackPolicy) CheckIP(ip netip.Addr) error {
	ip = ip.Unmap()
	for _, a := range p.Allow {
		if a.Contains(ip) {
			return nil
		}
	}
	bad := ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsUnspecified() || ip.IsMulticast() || ip.IsInterfaceLocalMulticast()
	for _, r := range internalRanges {
		bad = bad || r.Contains(ip)
	}
	if bad {
		return fmt.Errorf("callback address %s is internal (loopback, link-local or private); see -webhooks.allow-cidrs", ip)
	}
	return nil
}

// CheckURL validates a callback URL and every address its host resolves to.
func (p CallbackPolicy) CheckURL(ctx context.Context, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return apierr.New(apierr.InvalidArgument, "Field callback_url must be an absolute http or https URL without credentials.")
	}
	host := u.Hostname()
	var addrs []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{ip}
	} else {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if addrs, err = net.DefaultResolver.LookupNetIP(rctx, "ip", host); err != nil {
			return apierr.New(apierr.InvalidArgument, "Field callback_url: host %q does not resolve: %v.", host, err)
		}
	}
	for _, ip := range addrs {
		if err := p.CheckIP(ip); err != nil {
			return apierr.New(apierr.InvalidArgument, "Field callback_url is not allowed: %v.", err).WithDetail("reason", "callback_not_allowed")
		}
	}
	return nil
}

// Client is an HTTP client that connects only where the policy allows and
// follows no redirects.
func (p CallbackPolicy) Client(timeout time.Duration) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second, Control: func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return err
		}
		return p.CheckIP(ap.Addr())
	}}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = d.DialContext
	tr.Proxy = nil // a proxy would connect on our behalf, past the check
	return &http.Client{Timeout: timeout, Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return errors.New("webhook callbacks are not followed through redirects")
		}}
}
