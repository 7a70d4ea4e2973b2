// The knowledge base: search (drafts too, for those who may see them),
// read, write drafts, publish and archive where the role allows (the
// server decides; a refusal shows its reason).

import { useEffect, useState } from "preact/hooks";
import { attempt, knowledge } from "./api";
import { ArticleState, type Article, type ArticleHit } from "./gen/swarmdesk/v1/swarmdesk_pb";
import { When } from "./ticket";
import { timestampMs } from "@bufbuild/protobuf/wkt";

const STATES: Record<number, string> = {
  [ArticleState.DRAFT]: "draft",
  [ArticleState.PUBLISHED]: "published",
  [ArticleState.ARCHIVED]: "archived",
};

function linkedId(): string {
  return location.hash.split("?")[1] ?? "";
}

export function Knowledge() {
  const [query, setQuery] = useState("");
  const [hits, setHits] = useState<ArticleHit[]>([]);
  const [article, setArticle] = useState<Article | null>(null);
  const [draft, setDraft] = useState<{ title: string; body: string; tags: string } | null>(null);
  const [error, setError] = useState("");

  const open = async (id: string) => {
    const r = await attempt(() => knowledge.getArticle({ id }));
    if ("ok" in r) {
      setArticle(r.ok);
      setError("");
    } else setError(r.error);
  };
  useEffect(() => {
    const id = linkedId();
    if (id) open(id);
  }, []);

  const search = async (e: Event) => {
    e.preventDefault();
    const r = await attempt(() =>
      knowledge.searchArticles({
        query,
        limit: 20,
        states: [ArticleState.DRAFT, ArticleState.PUBLISHED, ArticleState.ARCHIVED],
      }),
    );
    if ("ok" in r) {
      setHits(r.ok.hits);
      setError("");
    } else setError(r.error);
  };
  const change = async (call: () => Promise<Article>) => {
    const r = await attempt(call);
    if ("ok" in r) {
      setArticle(r.ok);
      setError("");
    } else setError(r.error);
  };
  const save = async (e: Event) => {
    e.preventDefault();
    if (!draft) return;
    const tags = draft.tags.split(",").map((t) => t.trim()).filter(Boolean);
    const r = await attempt(() => knowledge.createArticle({ title: draft.title, body: draft.body, tags }));
    if ("ok" in r) {
      setArticle(r.ok);
      setDraft(null);
      setError("");
    } else setError(r.error);
  };

  return (
    <main class="kb">
      <section class="kb-search">
        <form onSubmit={search}>
          <input value={query} placeholder="Search the knowledge base" onInput={(e) => setQuery((e.target as HTMLInputElement).value)} />
          <button type="submit">Search</button>
          <button type="button" onClick={() => setDraft({ title: "", body: "", tags: "" })}>
            New draft
          </button>
        </form>
        <ul class="hits">
          {hits.map((h) => (
            <li>
              <a href={`#/kb?${h.articleId}`} onClick={() => open(h.articleId)}>
                {h.articleId} {h.title}
              </a>{" "}
              <span class="muted">{STATES[h.state]}</span>
              <p class="snippet">{h.snippet}</p>
            </li>
          ))}
        </ul>
      </section>
      <section class="kb-article">
        {error && <p class="error">{error}</p>}
        {draft && (
          <form class="draft" onSubmit={save}>
            <input placeholder="Title" value={draft.title} onInput={(e) => setDraft({ ...draft, title: (e.target as HTMLInputElement).value })} />
            <textarea placeholder="What solves it" value={draft.body} onInput={(e) => setDraft({ ...draft, body: (e.target as HTMLTextAreaElement).value })} />
            <input placeholder="tags, e.g. vpn, network" value={draft.tags} onInput={(e) => setDraft({ ...draft, tags: (e.target as HTMLInputElement).value })} />
            <button type="submit" class="primary">
              Save draft
            </button>
          </form>
        )}
        {article && !draft && (
          <article>
            <h2>
              {article.id} {article.title}
            </h2>
            <p class="muted">
              {STATES[article.state]} · by {article.author} · tags {article.tags.join(", ")}
              {article.updatedAt && (
                <>
                  {" "}
                  · updated <When ms={timestampMs(article.updatedAt)} />
                </>
              )}
            </p>
            <div class="article-body">{article.body}</div>
            <div class="actions">
              {article.state !== ArticleState.PUBLISHED && (
                <button onClick={() => change(() => knowledge.publishArticle({ id: article.id, expectedVersion: article.version }))}>Publish</button>
              )}
              {article.state !== ArticleState.ARCHIVED && (
                <button onClick={() => change(() => knowledge.archiveArticle({ id: article.id, expectedVersion: article.version }))}>Archive</button>
              )}
            </div>
          </article>
        )}
      </section>
    </main>
  );
}
