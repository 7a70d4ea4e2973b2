// The shell: sign-in, the top bar (who, live state, presence), the screens
// by role, and the keys that work everywhere.

import { useEffect, useState } from "preact/hooks";
import { admin, attempt, experts, me, roleName, signIn, signOut, signedOutBecause, token } from "./api";
import { Board } from "./board";
import { ExpertScreen } from "./expert";
import { Presence, Role, type Token } from "./gen/swarmdesk/v1/swarmdesk_pb";
import { Knowledge } from "./knowledge";
import { follow, link, rendered, unseen, version } from "./live";
import { Stats } from "./stats";

type Screen = "desk" | "board" | "stats" | "kb";

function currentScreen(): Screen {
  const name = location.hash.replace(/^#\/?/, "").split("?")[0];
  return (["desk", "board", "stats", "kb"] as Screen[]).includes(name as Screen) ? (name as Screen) : "desk";
}

export function App() {
  const who = me.value;
  const [checking, setChecking] = useState(token.value !== null && who === null);

  // A token kept from earlier in this tab: ask who it is.
  useEffect(() => {
    if (token.value === null || me.value !== null) return;
    const secret = token.value;
    attempt(() => admin.whoAmI({})).then((r) => {
      setChecking(false);
      if ("ok" in r) signIn(secret, r.ok);
      else signOut(signedOutBecause.value || r.error);
    });
  }, [token.value]);

  if (checking) return <p class="centered">Signing in…</p>;
  if (!who) return <SignIn />;
  return <Signed who={who} />;
}

function SignIn() {
  const [secret, setSecret] = useState("");
  const [error, setError] = useState("");
  const submit = async (e: Event) => {
    e.preventDefault();
    const value = secret.trim();
    if (!value) return;
    token.value = value;
    const r = await attempt(() => admin.whoAmI({}));
    if ("error" in r) {
      token.value = null;
      setError(r.error);
      return;
    }
    if (r.ok.role === Role.BOT) {
      token.value = null;
      setError("This is a bot's token: bots use the API, not the console.");
      return;
    }
    signIn(value, r.ok);
  };
  return (
    <main class="signin">
      <h1>swarmdesk</h1>
      <form onSubmit={submit}>
        <label for="token">Token</label>
        <input
          id="token"
          type="password"
          autoComplete="off"
          value={secret}
          onInput={(e) => setSecret((e.target as HTMLInputElement).value)}
          placeholder="sd_…"
          autoFocus
        />
        <button type="submit">Sign in</button>
      </form>
      {(error || signedOutBecause.value) && (
        <p class="error" role="alert">
          {error || signedOutBecause.value}
        </p>
      )}
      <p class="hint">
        Ask an admin for an expert or supervisor token (<code>swarmdesk token create</code>). It is kept for this tab
        only.
      </p>
    </main>
  );
}

const KEYS: [string, string][] = [
  ["j / k", "next / previous ticket in the list"],
  ["Enter", "open the selected ticket"],
  ["r", "reply to the customer"],
  ["n", "write an internal note"],
  ["Ctrl/Cmd + Enter", "send"],
  ["Esc", "leave the text box, close this"],
  ["?", "show these keys"],
];

function Signed({ who }: { who: Token }) {
  const [screen, setScreen] = useState<Screen>(currentScreen());
  const [help, setHelp] = useState(false);
  const [presence, setPresence] = useState<Presence>(Presence.AVAILABLE);
  const isExpert = who.role === Role.EXPERT;

  useEffect(() => {
    const stop = new AbortController();
    follow(who.role, who.expertId, stop.signal);
    if (isExpert) {
      attempt(() => experts.getExpert({ id: who.expertId })).then((r) => "ok" in r && setPresence(r.ok.presence));
      if ("Notification" in globalThis && Notification.permission === "default") {
        Notification.requestPermission().catch(() => undefined);
      }
    }
    return () => stop.abort();
  }, [who]);

  useEffect(() => {
    const onHash = () => setScreen(currentScreen());
    window.addEventListener("hashchange", onHash);
    return () => window.removeEventListener("hashchange", onHash);
  }, []);

  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      const typing = (e.target as HTMLElement | null)?.closest("input, textarea, select");
      if (e.key === "Escape") {
        setHelp(false);
        if (typing) (typing as HTMLElement).blur();
      } else if (e.key === "?" && !typing) {
        setHelp((h) => !h);
      }
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, []);

  // Seen once the tab has focus.
  useEffect(() => {
    const clear = () => {
      if (!document.hidden) unseen.value = 0;
    };
    document.addEventListener("visibilitychange", clear);
    window.addEventListener("focus", clear);
    return () => {
      document.removeEventListener("visibilitychange", clear);
      window.removeEventListener("focus", clear);
    };
  }, []);
  document.title = unseen.value > 0 ? `(${unseen.value}) swarmdesk` : "swarmdesk";

  useEffect(() => rendered());
  void version.value;

  const togglePresence = async () => {
    const next = presence === Presence.AVAILABLE ? Presence.AWAY : Presence.AVAILABLE;
    const r = await attempt(() => experts.setPresence({ expertId: who.expertId, presence: next }));
    if ("ok" in r) setPresence(r.ok.presence);
  };

  const main = screen === "stats" ? <Stats /> : screen === "kb" ? <Knowledge /> : isExpert && screen === "desk" ? <ExpertScreen who={who} /> : <Board who={who} />;
  const tabs: [Screen, string][] = isExpert
    ? [
        ["desk", "Desk"],
        ["stats", "Stats"],
        ["kb", "Knowledge"],
      ]
    : [
        ["board", "Board"],
        ["stats", "Stats"],
        ["kb", "Knowledge"],
      ];
  return (
    <div class="shell">
      <header class="topbar">
        <strong class="brand">swarmdesk</strong>
        <nav>
          {tabs.map(([name, label]) => (
            <a href={`#/${name}`} class={screen === name || (name === "board" && screen === "desk" && !isExpert) ? "active" : ""}>
              {label}
            </a>
          ))}
        </nav>
        <span class={`link link-${link.value}`} data-testid="link" title="The live stream">
          {link.value === "live" ? "live" : link.value === "connecting" ? "connecting…" : "reconnecting…"}
        </span>
        {isExpert && (
          <button class={`presence presence-${presence === Presence.AWAY ? "away" : "available"}`} onClick={togglePresence} data-testid="presence">
            {presence === Presence.AWAY ? "away" : "available"}
          </button>
        )}
        <span class="who" data-testid="who">
          {who.expertId || who.label} · {roleName(who.role)}
        </span>
        <button class="linkish" onClick={() => setHelp(true)} title="Keyboard shortcuts">
          ?
        </button>
        <button class="linkish" onClick={() => signOut()}>
          Sign out
        </button>
      </header>
      {main}
      {help && (
        <div class="overlay" role="dialog" aria-label="Keyboard shortcuts" onClick={() => setHelp(false)}>
          <div class="keys" data-testid="keys">
            <h2>Keys</h2>
            <table>
              <tbody>
                {KEYS.map(([k, what]) => (
                  <tr>
                    <td>
                      <kbd>{k}</kbd>
                    </td>
                    <td>{what}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </div>
      )}
    </div>
  );
}
