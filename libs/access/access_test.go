package access

import (
	"testing"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/authtoken"
)

func claims(sub, level string, perms []string, domains ...string) *authtoken.Claims {
	c := &authtoken.Claims{Level: level, Permissions: perms, Domains: domains}
	c.Subject = sub
	return c
}

var (
	observer    = claims("observer", "L1", []string{ReadPublic})
	basic       = claims("ai-001", "L2", []string{ReadPublic, WriteOwn, "execute_assigned"}, "team-a:")
	advanced    = claims("ai-050", "L2", []string{ReadAll, WriteAll, "execute_all", "propose_changes"})
	coordinator = claims("coordinator", "L3", []string{"manage_region", "approve_changes", "view_analytics"})
	admin       = claims("admin", "L4", []string{"manage_federation", "modify_policies", "view_all_logs"})
)

func TestWrite(t *testing.T) {
	tests := []struct {
		who     *authtoken.Claims
		id      string
		missing string // "" = allowed
	}{
		{observer, "observer:x", WriteOwn},
		{basic, "ai-001:beliefs", ""},
		{basic, "ai-001:private:diary", ""},
		{basic, "team-a:plan", ""},
		{basic, "ai-002:beliefs", WriteAll},
		{basic, "ai-0011:spoof", WriteAll}, // a prefix of the id, not the client's prefix
		{advanced, "ai-002:beliefs", ""},
		{coordinator, "coordinator:notes", ""},
		{coordinator, "ai-002:x", WriteAll},
		{admin, "anything", ""},
	}
	for _, tt := range tests {
		err := CheckWrite(tt.who, tt.id)
		if tt.missing == "" {
			if err != nil {
				t.Errorf("%s writing %s: %v", tt.who.Subject, tt.id, err)
			}
			continue
		}
		e := apierr.As(err)
		if e.Code != apierr.PermissionDenied || e.Details["missing_permission"] != tt.missing {
			t.Errorf("%s writing %s: got %v %v, want permission_denied missing %s", tt.who.Subject, tt.id, err, e.Details, tt.missing)
		}
	}
}

func TestRead(t *testing.T) {
	tests := []struct {
		who  *authtoken.Claims
		id   string
		want bool
	}{
		{observer, "ai-001:beliefs", true},
		{observer, "ai-001:private:diary", false},
		{basic, "ai-002:beliefs", true},
		{basic, "ai-001:private:diary", true},
		{basic, "ai-002:private:diary", false},
		{advanced, "ai-002:private:diary", true},
		{coordinator, "ai-002:private:diary", true},
		{nil, "ai-001:beliefs", false},
	}
	for _, tt := range tests {
		if got := CanRead(tt.who, tt.id); got != tt.want {
			t.Errorf("CanRead(%v, %s) = %v, want %v", tt.who, tt.id, got, tt.want)
		}
	}
	if e := apierr.As(CheckRead(basic, "ai-002:private:x")); e.Code != apierr.PermissionDenied || e.Details["missing_permission"] != ReadAll {
		t.Errorf("denied read: %+v", e)
	}
}

func TestRequireLevel(t *testing.T) {
	if err := RequireLevel(coordinator, "L3", "Reading the review queue"); err != nil {
		t.Fatal(err)
	}
	e := apierr.As(RequireLevel(basic, "L3", "Reading the review queue"))
	if e.Code != apierr.PermissionDenied || e.Details["missing_permission"] != "manage_region" {
		t.Fatalf("%+v", e)
	}
	if e := apierr.As(RequireLevel(coordinator, "L4", "Client administration")); e.Details["missing_permission"] != "manage_federation" {
		t.Fatalf("%+v", e)
	}
}
