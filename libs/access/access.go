// Package access decides who may read and write what (seed 2.3 levels, 6.2
// roles). Every service that serves callers asks it, so one rule set holds
// everywhere:
//
//   - A client's own prefix is its client id and a colon ("ai-042:"); its
//     domains are further id prefixes assigned to it in the client registry.
//   - A document is private when its id is under "<owner>:private:"; every other
//     document is public state.
//   - read_public (L1 observers, L2 agents) reads public state and the client's
//     own private documents; read_all (ai_system_advanced, L3 and L4) reads all.
//   - write_own writes under the client's own prefix and its domains; write_all
//     (ai_system_advanced, L4) writes anywhere. L1 never writes; L3 writes within
//     its domains and own prefix.
//   - The review queue needs L3; client and key administration needs L4.
package access

import (
	"slices"
	"strings"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/authtoken"
)

// Permissions.
const (
	ReadPublic = "read_public"
	ReadAll    = "read_all"
	WriteOwn   = "write_own"
	WriteAll   = "write_all"
)

// RolePermissions are the permissions of the seed's roles (section 6.2), plus the
// observer role of level L1.
var RolePermissions = map[string][]string{
	"observer":             {ReadPublic},
	"ai_system_basic":      {ReadPublic, WriteOwn, "execute_assigned"},
	"ai_system_advanced":   {ReadAll, WriteAll, "execute_all", "propose_changes"},
	"regional_coordinator": {"manage_region", "approve_changes", "view_analytics"},
	"federation_admin":     {"manage_federation", "modify_policies", "view_all_logs"},
}

// LevelRole is the usual role of each level.
var LevelRole = map[string]string{"L1": "observer", "L2": "ai_system_basic", "L3": "regional_coordinator", "L4": "federation_admin"}

// PrivateMarker is the id segment after the owner's prefix that makes a
// document private: "ai-042:private:diary".
const PrivateMarker = "private:"

func has(c *authtoken.Claims, perm string) bool { return slices.Contains(c.Permissions, perm) }

// OwnPrefix is the id prefix a client owns.
func OwnPrefix(c *authtoken.Claims) string { return c.Subject + ":" }

// isPrivate reports whether id is some client's private document, and whose.
func isPrivate(id string) (owner string, private bool) {
	owner, rest, ok := strings.Cut(id, ":")
	if !ok || !strings.HasPrefix(rest, PrivateMarker) {
		return "", false
	}
	return owner, true
}

// CanReadAll reports whether c reads every document.
func CanReadAll(c *authtoken.Claims) bool {
	return has(c, ReadAll) || authtoken.LevelAtLeast(c.Level, "L3")
}

// CanRead reports whether c may read document id.
func CanRead(c *authtoken.Claims, id string) bool {
	if c == nil {
		return false
	}
	if CanReadAll(c) {
		return true
	}
	owner, private := isPrivate(id)
	if private {
		return owner == c.Subject
	}
	return has(c, ReadPublic)
}

// CheckRead returns permission_denied naming read_all when c may not read id.
func CheckRead(c *authtoken.Claims, id string) error {
	if CanRead(c, id) {
		return nil
	}
	return apierr.New(apierr.PermissionDenied, "Reading %s needs permission read_all; client %s has %v.", id, subject(c), perms(c)).
		WithDetail("missing_permission", ReadAll)
}

// CheckWrite returns permission_denied naming the missing permission when c may
// not write document id.
func CheckWrite(c *authtoken.Claims, id string) error {
	if c == nil {
		return apierr.New(apierr.Unauthenticated, "A bearer token is required.")
	}
	if has(c, WriteAll) || c.Level == "L4" {
		return nil
	}
	if c.Level == "L1" || (!has(c, WriteOwn) && c.Level != "L3") {
		return apierr.New(apierr.PermissionDenied, "Writing needs permission write_own; client %s (%s) has %v.", c.Subject, c.Level, perms(c)).
			WithDetail("missing_permission", WriteOwn)
	}
	if strings.HasPrefix(id, OwnPrefix(c)) {
		return nil
	}
	for _, d := range c.Domains {
		if d != "" && strings.HasPrefix(id, d) {
			return nil
		}
	}
	return apierr.New(apierr.PermissionDenied, "Writing %s needs permission write_all: client %s may write only under %s%s.", id, c.Subject, OwnPrefix(c), domainList(c)).
		WithDetail("missing_permission", WriteAll)
}

// RequireLevel returns permission_denied unless c has at least level min.
func RequireLevel(c *authtoken.Claims, min, what string) error {
	if c == nil {
		return apierr.New(apierr.Unauthenticated, "A bearer token is required.")
	}
	if !authtoken.LevelAtLeast(c.Level, min) {
		perm := map[string]string{"L3": "manage_region", "L4": "manage_federation"}[min]
		return apierr.New(apierr.PermissionDenied, "%s needs level %s (permission %s); client %s has %s.", what, min, perm, c.Subject, c.Level).
			WithDetail("missing_permission", perm).WithDetail("required_level", min)
	}
	return nil
}

func subject(c *authtoken.Claims) string {
	if c == nil {
		return "(anonymous)"
	}
	return c.Subject
}

func perms(c *authtoken.Claims) []string {
	if c == nil {
		return nil
	}
	return c.Permissions
}

func domainList(c *authtoken.Claims) string {
	if len(c.Domains) == 0 {
		return ""
	}
	return " and " + strings.Join(c.Domains, ", ")
}
