/* test_ns - the contract of include/insightfs/ns.h: merging configured and discovered
 * dashboards and widgets into one tree (SPEC 4, Discovery), lookups, escaping, refcounts.
 *
 * Covers: configured entries first in config order, then discovered ones in API order; a
 * discovered entry whose id is configured (or already discovered) is dropped and the
 * configured name kept; discovered names sanitized ('/', control bytes, 0x7f -> '_', a
 * leading '.' -> '_', cut to 200 bytes at a UTF-8 boundary, empty or null -> the id); a
 * discovered name equal to a sibling's name or id gets " (<id>)", cut to fit 255 bytes and
 * still unique (the tree then loads as a configuration through cfg_load); widgets of configured
 * and discovered dashboards discovered too, after the configured ones; ns_find_dashboard
 * and ns_find_widget matching names before ids; ns_config_escape; ns_ref/ns_unref (run
 * under ASan to check for leaks and use after free); cfg and the lists are borrowed.
 *
 * The struct cfg is built by hand (only dashboards/n_dashboards set, the rest zero) and
 * the "discovered" lists are hand-made api_item arrays. A tree is compared as one string,
 * "name#id{wname#wid,...} | ...", so a failure shows the whole tree.
 */
#include "insightfs/ns.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* --- helpers ------------------------------------------------------------------------ */

static struct cfg make_cfg(struct cfg_dashboard *dashboards, size_t n)
{
    struct cfg cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.dashboards = dashboards;
    cfg.n_dashboards = n;
    return cfg;
}

/* The whole tree as "name#id{wname#wid,...} | ..." (malloc'd). */
static char *tree_str(const struct ns_tree *t)
{
    char *s = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&s, &len);
    assert_non_null(f);
    for (size_t i = 0; i < t->n_dashboards; i++) {
        const struct ns_dashboard *d = &t->dashboards[i];
        assert_non_null(d->name);
        assert_non_null(d->id);
        fprintf(f, "%s%s#%s{", i ? " | " : "", d->name, d->id);
        for (size_t j = 0; j < d->n_widgets; j++) {
            assert_non_null(d->widgets[j].name);
            assert_non_null(d->widgets[j].id);
            fprintf(f, "%s%s#%s", j ? "," : "", d->widgets[j].name, d->widgets[j].id);
        }
        fputc('}', f);
    }
    assert_int_equal(fclose(f), 0);
    return s;
}

static void check_tree(const struct ns_tree *t, const char *want)
{
    assert_non_null(t);
    char *got = tree_str(t);
    if (strcmp(got, want) != 0)
        fail_msg("tree\n  got:  %s\n  want: %s", got, want);
    free(got);
}

/* Build, compare, release. */
static void build_check(const struct cfg *cfg, const struct ns_discovered *disc, const char *want)
{
    struct ns_tree *t = ns_build(cfg, disc);
    assert_non_null(t);
    check_tree(t, want);
    ns_unref(t);
}

/* The name one discovered dashboard gets when it is alone in the tree. */
static char *discovered_dash_name(const char *id, const char *api_name)
{
    struct cfg cfg = make_cfg(NULL, 0);
    struct api_item item = {(char *)id, (char *)api_name};
    struct ns_discovered disc = {.dashboards = &item, .n_dashboards = 1};
    struct ns_tree *t = ns_build(&cfg, &disc);
    assert_non_null(t);
    assert_int_equal(t->n_dashboards, 1);
    assert_string_equal(t->dashboards[0].id, id);
    char *name = strdup(t->dashboards[0].name);
    assert_non_null(name);
    ns_unref(t);
    return name;
}

/* The name one discovered widget gets when it is alone in a configured dashboard. */
static char *discovered_widget_name(const char *id, const char *api_name)
{
    struct cfg_dashboard dash = {"D", "1", NULL, 0};
    struct cfg cfg = make_cfg(&dash, 1);
    struct api_item item = {(char *)id, (char *)api_name};
    const char *dash_ids[] = {"1"};
    const struct api_item *lists[] = {&item};
    size_t counts[] = {1};
    struct ns_discovered disc = {
        .widget_dash_ids = dash_ids, .widgets = lists, .n_widgets = counts, .n_widget_lists = 1};
    struct ns_tree *t = ns_build(&cfg, &disc);
    assert_non_null(t);
    assert_int_equal(t->n_dashboards, 1);
    assert_int_equal(t->dashboards[0].n_widgets, 1);
    assert_string_equal(t->dashboards[0].widgets[0].id, id);
    char *name = strdup(t->dashboards[0].widgets[0].name);
    assert_non_null(name);
    ns_unref(t);
    return name;
}

static char *repeat(char c, size_t n, const char *tail)
{
    size_t tl = strlen(tail);
    char *s = malloc(n + tl + 1);
    assert_non_null(s);
    memset(s, c, n);
    memcpy(s + n, tail, tl + 1);
    return s;
}

/* --- the tree ----------------------------------------------------------------------- */

static void test_configured_only(void **state)
{
    (void)state;
    struct cfg_widget prod_w[] = {{"CPU", "11"}, {"Memory", "12"}, {"Disk", "10"}};
    struct cfg_dashboard dash[] = {
        {"Prod", "1", prod_w, N(prod_w)},
        {"Empty", "20", NULL, 0},
        {"Alpha", "3", NULL, 0},
    };
    struct cfg cfg = make_cfg(dash, N(dash));
    const char *want = "Prod#1{CPU#11,Memory#12,Disk#10} | Empty#20{} | Alpha#3{}";
    build_check(&cfg, NULL, want);

    /* An empty discovered list changes nothing. */
    struct ns_discovered none = {0};
    build_check(&cfg, &none, want);

    /* No dashboards at all: an empty tree. */
    struct cfg empty = make_cfg(NULL, 0);
    struct ns_tree *t = ns_build(&empty, NULL);
    assert_non_null(t);
    assert_int_equal(t->n_dashboards, 0);
    assert_null(ns_find_dashboard(t, "Prod"));
    assert_null(ns_find_dashboard(t, ""));
    ns_unref(t);
}

static void test_discovered_api_order(void **state)
{
    (void)state;
    struct cfg cfg = make_cfg(NULL, 0);
    struct api_item items[] = {{"30", "Zeta"}, {"10", "Alpha"}, {"20", "Mid"}, {"5", "beta"}};
    struct ns_discovered disc = {.dashboards = items, .n_dashboards = N(items)};
    build_check(&cfg, &disc, "Zeta#30{} | Alpha#10{} | Mid#20{} | beta#5{}");
}

static void test_configured_first_and_wins_by_id(void **state)
{
    (void)state;
    struct cfg_dashboard dash[] = {{"Prod", "1", NULL, 0}, {"Dev", "2", NULL, 0}};
    struct cfg cfg = make_cfg(dash, N(dash));
    struct api_item items[] = {
        {"5", "Five"},
        {"2", "Development (from the API)"}, /* configured id: dropped, "Dev" kept */
        {"1", "Production"},                 /* configured id: dropped, "Prod" kept */
        {"4", "Four"},
        {"5", "Five again"}, /* the API repeating an id: the first one stays */
        {"6", "Dev"},        /* not the same id, the same name: suffixed */
    };
    struct ns_discovered disc = {.dashboards = items, .n_dashboards = N(items)};
    build_check(&cfg, &disc, "Prod#1{} | Dev#2{} | Five#5{} | Four#4{} | Dev (6)#6{}");
}

/* --- sanitizing ----------------------------------------------------------------------- */

struct sanitize_case {
    const char *what;
    const char *api_name; /* NULL: the API gave null */
    const char *want;     /* NULL: the id */
};

static const struct sanitize_case sanitize_cases[] = {
    {"plain", "Production", "Production"},
    {"spaces kept", " a b ", " a b "},
    {"slash", "a/b", "a_b"},
    {"only slashes", "//", "__"},
    {"control bytes", "x\x01y\x1fz", "x_y_z"},
    {"tab and newline", "tab\tnl\n", "tab_nl_"},
    {"DEL", "del\x7f", "del_"},
    {"0x20 is not a control byte", "\x20", " "},
    {"leading dot", ".hidden", "_hidden"},
    {"dot", ".", "_"},
    {"dot dot", "..", "_."},
    {"inner dots kept", "a.b.", "a.b."},
    {"leading slash then dot", "/.x", "_.x"},
    {"leading control byte then dot", "\x02.x", "_.x"},
    {"UTF-8 kept", "\xd0\x9f\xd1\x80\xd0\xbe\xd0\xb4 \xe2\x82\xac",
     "\xd0\x9f\xd1\x80\xd0\xbe\xd0\xb4 \xe2\x82\xac"},
    {"bytes >= 0x80 kept", "\x80\xff", "\x80\xff"},
    {"empty -> id", "", NULL},
    {"null -> id", NULL, NULL},
};

static void test_sanitize_names(void **state)
{
    (void)state;
    for (size_t i = 0; i < N(sanitize_cases); i++) {
        const struct sanitize_case *c = &sanitize_cases[i];
        const char *want = c->want ? c->want : "4242";
        char *got = discovered_dash_name("4242", c->api_name);
        if (strcmp(got, want) != 0)
            fail_msg("dashboard, %s: got \"%s\", want \"%s\"", c->what, got, want);
        free(got);
        got = discovered_widget_name("4242", c->api_name);
        if (strcmp(got, want) != 0)
            fail_msg("widget, %s: got \"%s\", want \"%s\"", c->what, got, want);
        free(got);
    }
}

struct cut_case {
    const char *what;
    size_t n_a;            /* this many 'a' bytes... */
    const char *tail;      /* ...then this */
    size_t want_a;         /* the result: this many 'a' bytes... */
    const char *want_tail; /* ...then this */
};

/* 200 bytes at most, never splitting a UTF-8 sequence. */
static const struct cut_case cut_cases[] = {
    {"exactly 200", 200, "", 200, ""},
    {"201", 201, "", 200, ""},
    {"250", 250, "", 200, ""},
    {"2-byte char at 198..199 kept", 198, "\xc3\xa9z", 198, "\xc3\xa9"},
    {"2-byte char across 199..200 dropped", 199, "\xc3\xa9z", 199, ""},
    {"3-byte char at 197..199 kept", 197, "\xe2\x82\xacx", 197, "\xe2\x82\xac"},
    {"3-byte char across 198..200 dropped", 198, "\xe2\x82\xac", 198, ""},
    {"3-byte char across 199..201 dropped", 199, "\xe2\x82\xac", 199, ""},
    {"4-byte char at 196..199 kept", 196, "\xf0\x9f\x98\x80z", 196, "\xf0\x9f\x98\x80"},
    {"4-byte char across 197..200 dropped", 197, "\xf0\x9f\x98\x80", 197, ""},
    {"4-byte char across 199..202 dropped", 199, "\xf0\x9f\x98\x80", 199, ""},
    {"a '/' past the cut does not matter", 210, "/", 200, ""},
    {"short UTF-8 untouched", 3, "\xf0\x9f\x98\x80", 3, "\xf0\x9f\x98\x80"},
};

static void test_sanitize_cut(void **state)
{
    (void)state;
    for (size_t i = 0; i < N(cut_cases); i++) {
        const struct cut_case *c = &cut_cases[i];
        char *in = repeat('a', c->n_a, c->tail);
        char *want = repeat('a', c->want_a, c->want_tail);
        assert_true(strlen(want) <= 200);
        char *got = discovered_dash_name("7", in);
        if (strcmp(got, want) != 0)
            fail_msg("dashboard, %s: got %zu bytes, want %zu", c->what, strlen(got), strlen(want));
        free(got);
        got = discovered_widget_name("7", in);
        if (strcmp(got, want) != 0)
            fail_msg("widget, %s: got %zu bytes, want %zu", c->what, strlen(got), strlen(want));
        free(got);
        free(want);
        free(in);
    }

    /* The cut happens with the other rules: a leading '.' and a '/' inside. */
    char *in = repeat('b', 240, "");
    in[0] = '.';
    in[100] = '/';
    char *want = repeat('b', 200, "");
    want[0] = '_';
    want[100] = '_';
    char *got = discovered_dash_name("7", in);
    assert_string_equal(got, want);
    free(got);
    free(want);
    free(in);
}

/* Sanitizing comes first, then the collision check, then the suffix (not cut again). */
static void test_sanitize_then_collide(void **state)
{
    (void)state;
    char *long_name = repeat('a', 200, "");
    char *longer = repeat('a', 250, "");
    struct cfg_dashboard dash[] = {{long_name, "1", NULL, 0}};
    struct cfg cfg = make_cfg(dash, N(dash));
    struct api_item items[] = {
        {"9", longer}, {"10", "P/d"}, {"11", "P_d"}, {"12", ".x"}, {"13", "_x"}};
    struct ns_discovered disc = {.dashboards = items, .n_dashboards = N(items)};
    char *want = NULL;
    assert_true(asprintf(&want,
                         "%s#1{} | %s (9)#9{} | P_d#10{} | P_d (11)#11{} | _x#12{} | "
                         "_x (13)#13{}",
                         long_name, long_name) > 0);
    build_check(&cfg, &disc, want);
    free(want);
    free(longer);
    free(long_name);
}

/* --- collisions among siblings ------------------------------------------------------ */

static void test_collisions(void **state)
{
    (void)state;
    struct cfg_dashboard dash[] = {{"Prod", "1", NULL, 0}, {"Dev", "2", NULL, 0}};
    struct cfg cfg = make_cfg(dash, N(dash));
    struct api_item items[] = {
        {"3", "Prod"},      /* a configured name */
        {"4", "1"},         /* a configured id */
        {"5", "Stage"},     /* free */
        {"6", "Stage"},     /* an earlier discovered name */
        {"7", "5"},         /* an earlier discovered id */
        {"8", "prod"},      /* names are case-sensitive: free */
        {"17", NULL},       /* null -> the id, free */
        {"18", ""},         /* empty -> the id, free */
        {"19", "Prod (3)"}, /* a suffixed name is a name like any other */
        {"20", "17"},       /* the id-named entry's name */
        {"21", NULL},       /* null -> "21", free */
    };
    struct ns_discovered disc = {.dashboards = items, .n_dashboards = N(items)};
    build_check(&cfg, &disc,
                "Prod#1{} | Dev#2{} | Prod (3)#3{} | 1 (4)#4{} | Stage#5{} | Stage (6)#6{} | "
                "5 (7)#7{} | prod#8{} | 17#17{} | 18#18{} | Prod (3) (19)#19{} | "
                "17 (20)#20{} | 21#21{}");
}

/* --- suffixed names stay names (SPEC 3: 1-255 bytes; SPEC 2: --discover output loads) --- */

/* t as --discover prints it, loaded by the configuration loader (credentials from env):
 * fails the test with the loader's message when any name or id is refused. */
static void assert_loads_as_config(const struct ns_tree *t)
{
    char path[] = "/tmp/test_ns.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    fputs("dashboards = (", f);
    for (size_t i = 0; i < t->n_dashboards; i++) {
        const struct ns_dashboard *d = &t->dashboards[i];
        char *n = ns_config_escape(d->name), *id = ns_config_escape(d->id);
        assert_non_null(n);
        assert_non_null(id);
        fprintf(f, "%s{ name = \"%s\"; id = \"%s\"; widgets = (", i ? ", " : "", n, id);
        free(n);
        free(id);
        for (size_t j = 0; j < d->n_widgets; j++) {
            n = ns_config_escape(d->widgets[j].name);
            id = ns_config_escape(d->widgets[j].id);
            assert_non_null(n);
            assert_non_null(id);
            fprintf(f, "%s{ name = \"%s\"; id = \"%s\"; }", j ? ", " : "", n, id);
            free(n);
            free(id);
        }
        fputs("); }", f);
    }
    fputs(");\n", f);
    assert_int_equal(fclose(f), 0);
    struct cfg_env env = {(char *)"AK", (char *)"SK"};
    struct cfg *cfg = NULL;
    char *err = NULL;
    int rc = cfg_load(path, CFG_MODE_MOUNT, &env, &cfg, &err);
    unlink(path);
    if (rc != 0)
        fail_msg("a built tree does not load as a configuration: %s", err ? err : "ENOMEM");
    assert_int_equal(cfg->n_dashboards, t->n_dashboards);
    cfg_free(cfg);
}

/* Every name at most 255 bytes and unique among its siblings, whatever the ids are. */
static void assert_names_fit(const struct ns_tree *t)
{
    for (size_t i = 0; i < t->n_dashboards; i++) {
        const struct ns_dashboard *d = &t->dashboards[i];
        assert_in_range(strlen(d->name), 1, 255);
        for (size_t k = 0; k < i; k++)
            assert_string_not_equal(d->name, t->dashboards[k].name);
        for (size_t j = 0; j < d->n_widgets; j++) {
            assert_in_range(strlen(d->widgets[j].name), 1, 255);
            for (size_t k = 0; k < j; k++)
                assert_string_not_equal(d->widgets[j].name, d->widgets[k].name);
        }
    }
}

/* The reviewer's case: two siblings named 200 x 'a', the second with a 93-byte id. " (<id>)"
 * appended whole gave 296 bytes, over SPEC 3's 255 and the kernel's NAME_MAX, so the dump
 * did not load; now the base is cut to make room (the id is kept whole, it tells them
 * apart). The same for widgets. */
static void test_suffixed_name_fits_255_bytes(void **state)
{
    (void)state;
    char *a200 = repeat('a', 200, ""), *id93 = repeat('i', 93, "");
    struct cfg cfg = make_cfg(NULL, 0);
    struct api_item items[] = {{"d1", a200}, {id93, a200}};
    const char *ids[] = {"d1"};
    const struct api_item *lists[] = {items};
    size_t counts[] = {N(items)};
    struct ns_discovered disc = {.dashboards = items,
                                 .n_dashboards = N(items),
                                 .widget_dash_ids = ids,
                                 .widgets = lists,
                                 .n_widgets = counts,
                                 .n_widget_lists = N(ids)};
    struct ns_tree *t = ns_build(&cfg, &disc);
    assert_non_null(t);
    char *second = repeat('a', 255 - 96, "");
    char *want = NULL;
    assert_true(asprintf(&want, "%s (%s)", second, id93) > 0);
    assert_int_equal(strlen(want), 255);
    char *whole = NULL;
    assert_true(
        asprintf(&whole, "%s#d1{%s#d1,%s#%s} | %s#%s{}", a200, a200, want, id93, want, id93) > 0);
    check_tree(t, whole);
    assert_names_fit(t);
    assert_loads_as_config(t);
    ns_unref(t);
    free(whole);
    free(want);
    free(second);
    free(id93);
    free(a200);
}

/* The base is cut at a UTF-8 boundary (a 3-byte character is never split); an id too long
 * to leave the base a byte (over 251 bytes) is shown as "#" and its FNV-1a-64 hash; the
 * id's '/' and control bytes become '_' in the name; and a suffixed name that is taken too
 * falls back to "#<hash>", then "#<hash>-2". Hashes computed independently:
 *   python3 -c "h=14695981039346656037
 *   for b in b'i/2': h=((h^b)*1099511628211)%2**64
 *   print('%016x'%h)"                                    -> 2ac9ab192b1e7e99
 * and the same over 300 x 'L'                           -> 3e5c73efcb70d665 */
static void test_suffixed_name_edge_cases(void **state)
{
    (void)state;
    char *snow66 = NULL, *snow65 = NULL;
    for (int i = 0; i < 66; i++) {
        char *next = NULL;
        assert_true(asprintf(&next, "%s\xe2\x98\x83", snow66 ? snow66 : "") > 0);
        free(snow66);
        snow66 = next;
    }
    snow65 = strndup(snow66, 195);
    assert_non_null(snow65);
    char *id55 = repeat('j', 55, ""), *id300 = repeat('L', 300, "");
    char *a200 = repeat('a', 200, "");
    struct cfg cfg = make_cfg(NULL, 0);
    struct api_item items[] = {
        {"s1", snow66}, /* 198 bytes */
        {id55, snow66}, /* room for 255 - 58 = 197 bytes of base: 65 snowmen (195), 253 in all */
        {"L1", a200},
        {id300, a200},                  /* " (<300 bytes>)" cannot fit: the hash */
        {"x1", "x"},                    /* free */
        {"i_2", "x (i_2)"},             /* free: an API name that looks suffixed */
        {"h", "x (#2ac9ab192b1e7e99)"}, /* free, and the first fallback of the next */
        {"i/2", "x"},                   /* "x (i_2)" and "x (#2ac9ab192b1e7e99)" are taken */
        {"c\x01", "x"},                 /* a control byte in the id: "x (c_)" */
    };
    struct ns_discovered disc = {.dashboards = items, .n_dashboards = N(items)};
    struct ns_tree *t = ns_build(&cfg, &disc);
    assert_non_null(t);
    assert_int_equal(t->n_dashboards, N(items));
    char *want1 = NULL, *want3 = NULL;
    assert_true(asprintf(&want1, "%s (%s)", snow65, id55) > 0);
    assert_int_equal(strlen(want1), 253);
    assert_string_equal(t->dashboards[1].name, want1);
    assert_true(asprintf(&want3, "%s (#3e5c73efcb70d665)", a200) > 0);
    assert_string_equal(t->dashboards[3].name, want3);
    assert_string_equal(t->dashboards[3].id, id300);
    assert_string_equal(t->dashboards[7].name, "x (#2ac9ab192b1e7e99-2)");
    assert_string_equal(t->dashboards[7].id, "i/2");
    assert_string_equal(t->dashboards[8].name, "x (c_)");
    assert_names_fit(t);
    /* The loader refuses a control byte in an id (SPEC 3): check the rest loads. */
    t->n_dashboards--;
    assert_loads_as_config(t);
    t->n_dashboards++;
    ns_unref(t);
    free(want3);
    free(want1);
    free(a200);
    free(id300);
    free(id55);
    free(snow65);
    free(snow66);
}

/* --- widgets -------------------------------------------------------------------------- */

static void test_widgets_merged(void **state)
{
    (void)state;
    struct cfg_widget prod_w[] = {{"CPU", "11"}, {"Mem", "12"}};
    struct cfg_dashboard dash[] = {{"Prod", "1", prod_w, N(prod_w)}, {"Dev", "2", NULL, 0}};
    struct cfg cfg = make_cfg(dash, N(dash));
    struct api_item dashboards[] = {{"1", "Production"}, {"3", "Web"}, {"4", "Bare"}};
    struct api_item w1[] = {
        {"12", "Memory (API)"}, /* configured id: dropped, "Mem" kept */
        {"13", "CPU"},          /* a configured widget's name */
        {"14", "11"},           /* a configured widget's id */
        {"15", "Disk/IO"},      /* sanitized */
        {"16", NULL},           /* null -> the id */
        {"17", ".x"},           /* leading dot */
        {"13", "CPU again"},    /* repeated id: dropped */
        {"18", "Prod"},         /* a dashboard's name is not a sibling's */
    };
    struct api_item w2[] = {{"21", "Net"}};
    struct api_item w3[] = {{"31", "CPU"}, {"32", "Web"}, {"11", "Mem"}};
    struct api_item w99[] = {{"991", "Orphan"}};
    /* Lists matched by dashboard id, not by position. */
    const char *ids[] = {"3", "99", "1", "2"};
    const struct api_item *lists[] = {w3, w99, w1, w2};
    size_t counts[] = {N(w3), N(w99), N(w1), N(w2)};
    struct ns_discovered disc = {.dashboards = dashboards,
                                 .n_dashboards = N(dashboards),
                                 .widget_dash_ids = ids,
                                 .widgets = lists,
                                 .n_widgets = counts,
                                 .n_widget_lists = N(ids)};
    build_check(&cfg, &disc,
                "Prod#1{CPU#11,Mem#12,CPU (13)#13,11 (14)#14,Disk_IO#15,16#16,_x#17,Prod#18} | "
                "Dev#2{Net#21} | Web#3{CPU#31,Web#32,Mem#11} | Bare#4{}");
}

/* An empty widget list for a dashboard leaves its configured widgets alone. */
static void test_widgets_empty_list(void **state)
{
    (void)state;
    struct cfg_widget prod_w[] = {{"CPU", "11"}};
    struct cfg_dashboard dash[] = {{"Prod", "1", prod_w, N(prod_w)}};
    struct cfg cfg = make_cfg(dash, N(dash));
    const char *ids[] = {"1"};
    const struct api_item *lists[] = {NULL};
    size_t counts[] = {0};
    struct ns_discovered disc = {
        .widget_dash_ids = ids, .widgets = lists, .n_widgets = counts, .n_widget_lists = 1};
    build_check(&cfg, &disc, "Prod#1{CPU#11}");
}

/* With pages = true, "index.html" is the pages' name (SPEC 4, 5): a discovered dashboard
 * or widget called so (by the API, or by its id when it has no name) gets " (<id>)";
 * without pages it is an ordinary name (dashboard 2 is suffixed there only because a
 * sibling's id is "index.html"). */
static void test_index_html_with_pages(void **state)
{
    (void)state;
    struct cfg_dashboard dash[] = {{"Prod", "1", NULL, 0}};
    struct cfg cfg = make_cfg(dash, N(dash));
    struct api_item dashboards[] = {
        {"2", "index.html"}, {"3", "index.htm"}, {"4", "Index.html"}, {"index.html", NULL}};
    struct api_item w1[] = {{"11", "index.html"}, {"12", "cpu"}};
    struct api_item w2[] = {{"21", "index.html"}};
    const char *ids[] = {"1", "2"};
    const struct api_item *lists[] = {w1, w2};
    size_t counts[] = {N(w1), N(w2)};
    struct ns_discovered disc = {.dashboards = dashboards,
                                 .n_dashboards = N(dashboards),
                                 .widget_dash_ids = ids,
                                 .widgets = lists,
                                 .n_widgets = counts,
                                 .n_widget_lists = N(ids)};
    build_check(&cfg, &disc,
                "Prod#1{index.html#11,cpu#12} | index.html (2)#2{index.html#21} | "
                "index.htm#3{} | Index.html#4{} | index.html#index.html{}");
    cfg.pages = true;
    build_check(&cfg, &disc,
                "Prod#1{index.html (11)#11,cpu#12} | index.html (2)#2{index.html (21)#21} | "
                "index.htm#3{} | Index.html#4{} | index.html (index.html)#index.html{}");
}

/* --- lookups -------------------------------------------------------------------------- */

/* A hand-built tree where one entry's name is another's id: the name wins. */
static void test_find_name_before_id_hand_built(void **state)
{
    (void)state;
    struct ns_widget w[] = {{"cpu", "5"}, {"5", "9"}, {"77", "77"}};
    struct ns_dashboard d[] = {
        {"alpha", "5", w, N(w)},
        {"5", "9", NULL, 0},
        {"77", "77", NULL, 0},
    };
    struct ns_tree t = {.dashboards = d, .n_dashboards = N(d)};

    assert_ptr_equal(ns_find_dashboard(&t, "5"), &d[1]); /* by name, not d[0] by id */
    assert_ptr_equal(ns_find_dashboard(&t, "9"), &d[1]); /* by id */
    assert_ptr_equal(ns_find_dashboard(&t, "alpha"), &d[0]);
    assert_ptr_equal(ns_find_dashboard(&t, "77"), &d[2]);
    assert_null(ns_find_dashboard(&t, "ALPHA"));
    assert_null(ns_find_dashboard(&t, "alph"));
    assert_null(ns_find_dashboard(&t, "alpha "));
    assert_null(ns_find_dashboard(&t, ""));
    assert_null(ns_find_dashboard(&t, "6"));

    assert_ptr_equal(ns_find_widget(&d[0], "5"), &w[1]);
    assert_ptr_equal(ns_find_widget(&d[0], "9"), &w[1]);
    assert_ptr_equal(ns_find_widget(&d[0], "cpu"), &w[0]);
    assert_ptr_equal(ns_find_widget(&d[0], "77"), &w[2]);
    assert_null(ns_find_widget(&d[0], "CPU"));
    assert_null(ns_find_widget(&d[0], ""));
    assert_null(ns_find_widget(&d[1], "5")); /* no widgets */
}

static void test_find_in_built_tree(void **state)
{
    (void)state;
    struct cfg_widget prod_w[] = {{"7", "7"}, {"CPU", "11"}};
    struct cfg_dashboard dash[] = {
        {"100", "100", NULL, 0}, /* a name equal to its own id */
        {"Prod", "1", prod_w, N(prod_w)},
    };
    struct cfg cfg = make_cfg(dash, N(dash));
    struct api_item items[] = {
        {"2", "Two"},
        {"3", "1"},   /* becomes "1 (3)" */
        {"40", "41"}, /* a later sibling's id: "41 (40)", so a dump loads */
        {"41", "Other"},
    };
    const char *ids[] = {"1"};
    struct api_item w1[] = {{"12", "Disk"}};
    const struct api_item *lists[] = {w1};
    size_t counts[] = {N(w1)};
    struct ns_discovered disc = {.dashboards = items,
                                 .n_dashboards = N(items),
                                 .widget_dash_ids = ids,
                                 .widgets = lists,
                                 .n_widgets = counts,
                                 .n_widget_lists = 1};
    struct ns_tree *t = ns_build(&cfg, &disc);
    check_tree(t, "100#100{} | Prod#1{7#7,CPU#11,Disk#12} | Two#2{} | 1 (3)#3{} | 41 (40)#40{} | "
                  "Other#41{}");

    const struct ns_dashboard *d;
    assert_ptr_equal(ns_find_dashboard(t, "100"), &t->dashboards[0]);
    assert_ptr_equal(ns_find_dashboard(t, "Prod"), &t->dashboards[1]);
    assert_ptr_equal(ns_find_dashboard(t, "1"), &t->dashboards[1]);
    assert_ptr_equal(ns_find_dashboard(t, "Two"), &t->dashboards[2]);
    assert_ptr_equal(ns_find_dashboard(t, "2"), &t->dashboards[2]);
    assert_ptr_equal(ns_find_dashboard(t, "1 (3)"), &t->dashboards[3]);
    assert_ptr_equal(ns_find_dashboard(t, "3"), &t->dashboards[3]);
    assert_ptr_equal(ns_find_dashboard(t, "41 (40)"), &t->dashboards[4]);
    assert_ptr_equal(ns_find_dashboard(t, "41"), &t->dashboards[5]); /* by id */
    assert_ptr_equal(ns_find_dashboard(t, "40"), &t->dashboards[4]);
    assert_ptr_equal(ns_find_dashboard(t, "Other"), &t->dashboards[5]);
    assert_null(ns_find_dashboard(t, "Production"));
    assert_null(ns_find_dashboard(t, "4"));

    d = ns_find_dashboard(t, "Prod");
    assert_non_null(d);
    assert_ptr_equal(ns_find_widget(d, "7"), &d->widgets[0]);
    assert_ptr_equal(ns_find_widget(d, "CPU"), &d->widgets[1]);
    assert_ptr_equal(ns_find_widget(d, "11"), &d->widgets[1]);
    assert_ptr_equal(ns_find_widget(d, "Disk"), &d->widgets[2]);
    assert_ptr_equal(ns_find_widget(d, "12"), &d->widgets[2]);
    assert_null(ns_find_widget(d, "13"));
    assert_null(ns_find_widget(d, "Prod"));
    d = ns_find_dashboard(t, "Two");
    assert_non_null(d);
    assert_int_equal(d->n_widgets, 0);
    assert_null(ns_find_widget(d, "7"));
    ns_unref(t);
}

/* --- ns_config_escape ----------------------------------------------------------------- */

static void test_config_escape(void **state)
{
    (void)state;
    static const struct {
        const char *in, *want;
    } rows[] = {
        {"", ""},
        {"plain name 1", "plain name 1"},
        {"say \"hi\"", "say \\\"hi\\\""},
        {"a\\b", "a\\\\b"},
        {"\\\"", "\\\\\\\""},
        {"\x01", "\\x01"},
        {"tab\there", "tab\\x09here"},
        {"nl\n", "nl\\x0A"},
        {"\x1b[0m", "\\x1B[0m"},
        {"\x1f", "\\x1F"},
        {"\x7f", "\\x7F"},
        {" ~", " ~"},
        {"a/b.c'd", "a/b.c'd"},
        {"\xd0\x9f\xe2\x82\xac", "\xd0\x9f\xe2\x82\xac"}, /* UTF-8 as is */
    };
    for (size_t i = 0; i < N(rows); i++) {
        char *got = ns_config_escape(rows[i].in);
        assert_non_null(got);
        if (strcmp(got, rows[i].want) != 0)
            fail_msg("row %zu: got \"%s\", want \"%s\"", i, got, rows[i].want);
        free(got);
    }

    /* The worst case: every byte a control byte, 4 characters each. */
    char in[65];
    memset(in, '\x02', 64);
    in[64] = '\0';
    char *got = ns_config_escape(in);
    assert_non_null(got);
    assert_int_equal(strlen(got), 4 * 64);
    for (size_t i = 0; i < 64; i++)
        assert_memory_equal(got + 4 * i, "\\x02", 4);
    free(got);
}

/* --- lifetime ------------------------------------------------------------------------- */

static void test_refcount(void **state)
{
    (void)state;
    struct cfg_widget w[] = {{"CPU", "11"}};
    struct cfg_dashboard dash[] = {{"Prod", "1", w, N(w)}};
    struct cfg cfg = make_cfg(dash, N(dash));
    struct api_item items[] = {{"2", "Two"}};
    struct ns_discovered disc = {.dashboards = items, .n_dashboards = N(items)};
    struct ns_tree *t = ns_build(&cfg, &disc);
    assert_non_null(t);
    assert_int_equal(atomic_load(&t->refs), 1);
    ns_ref(t);
    ns_ref(t);
    assert_int_equal(atomic_load(&t->refs), 3);
    ns_unref(t);
    assert_int_equal(atomic_load(&t->refs), 2);
    check_tree(t, "Prod#1{CPU#11} | Two#2{}"); /* still whole (ASan: no use after free) */
    ns_unref(t);
    assert_int_equal(atomic_load(&t->refs), 1);
    check_tree(t, "Prod#1{CPU#11} | Two#2{}");
    ns_unref(t); /* the last one frees everything: ASan reports any leak */
    ns_unref(NULL);

    /* Two trees from the same inputs are independent. */
    struct ns_tree *a = ns_build(&cfg, &disc);
    struct ns_tree *b = ns_build(&cfg, NULL);
    assert_non_null(a);
    assert_non_null(b);
    assert_ptr_not_equal(a, b);
    ns_unref(a);
    check_tree(b, "Prod#1{CPU#11}");
    ns_unref(b);
}

/* cfg and the lists are borrowed: the tree keeps its own copies. */
static void test_inputs_borrowed(void **state)
{
    (void)state;
    struct cfg_widget *w = calloc(1, sizeof(*w));
    struct cfg_dashboard *dash = calloc(1, sizeof(*dash));
    struct api_item *items = calloc(2, sizeof(*items));
    struct api_item *wi = calloc(1, sizeof(*wi));
    assert_non_null(w);
    assert_non_null(dash);
    assert_non_null(items);
    assert_non_null(wi);
    w->name = strdup("CPU");
    w->id = strdup("11");
    *dash = (struct cfg_dashboard){strdup("Prod"), strdup("1"), w, 1};
    items[0] = (struct api_item){strdup("2"), strdup("Two/2")};
    items[1] = (struct api_item){strdup("3"), NULL};
    wi[0] = (struct api_item){strdup("21"), strdup("Net")};
    char *dash_id = strdup("2");
    const char *ids[] = {dash_id};
    const struct api_item *lists[] = {wi};
    size_t counts[] = {1};
    struct cfg cfg = make_cfg(dash, 1);
    struct ns_discovered disc = {.dashboards = items,
                                 .n_dashboards = 2,
                                 .widget_dash_ids = ids,
                                 .widgets = lists,
                                 .n_widgets = counts,
                                 .n_widget_lists = 1};
    struct ns_tree *t = ns_build(&cfg, &disc);
    assert_non_null(t);

    /* Scribble over and free every input. */
    char *strs[] = {w->name,       w->id,       dash->name, dash->id,   items[0].id,
                    items[0].name, items[1].id, wi[0].id,   wi[0].name, dash_id};
    for (size_t i = 0; i < N(strs); i++) {
        memset(strs[i], 'X', strlen(strs[i]));
        free(strs[i]);
    }
    free(w);
    free(dash);
    free(items);
    free(wi);

    check_tree(t, "Prod#1{CPU#11} | Two_2#2{Net#21} | 3#3{}");
    ns_unref(t);
}

/* --- by id only ----------------------------------------------------------------------- */

/* One entry's name is another's id: by id must never answer the name. */
static void test_by_id_never_matches_names(void **state)
{
    (void)state;
    struct ns_widget w[] = {{"cpu", "5"}, {"5", "9"}};
    struct ns_dashboard d[] = {
        {"df_222", "df_111", w, N(w)},
        {"DB", "df_222", NULL, 0},
    };
    struct ns_tree t = {.dashboards = d, .n_dashboards = N(d)};

    assert_ptr_equal(ns_find_dashboard(&t, "df_222"), &d[0]);  /* a typed name: name first */
    assert_ptr_equal(ns_dashboard_by_id(&t, "df_222"), &d[1]); /* a stored id: id only */
    assert_ptr_equal(ns_dashboard_by_id(&t, "df_111"), &d[0]);
    assert_null(ns_dashboard_by_id(&t, "DB"));
    assert_null(ns_dashboard_by_id(&t, "df_22"));
    assert_null(ns_dashboard_by_id(&t, ""));
    assert_null(ns_dashboard_by_id(&t, NULL));
    assert_null(ns_dashboard_by_id(NULL, "df_111"));

    assert_ptr_equal(ns_find_widget(&d[0], "5"), &w[1]);
    assert_ptr_equal(ns_widget_by_id(&d[0], "5"), &w[0]);
    assert_ptr_equal(ns_widget_by_id(&d[0], "9"), &w[1]);
    assert_null(ns_widget_by_id(&d[0], "cpu"));
    assert_null(ns_widget_by_id(&d[0], NULL));
    assert_null(ns_widget_by_id(&d[1], "5")); /* no widgets */
    assert_null(ns_widget_by_id(NULL, "5"));
}

/* The defect's tree, built the way the mount builds it: configured "df_222" is df_111,
 * and the API's df_222 (named "DB") keeps its own widgets behind its id. */
static void test_by_id_in_built_tree(void **state)
{
    (void)state;
    struct cfg_dashboard dash[] = {{"df_222", "df_111", NULL, 0}};
    struct cfg cfg = make_cfg(dash, N(dash));
    struct api_item items[] = {{"df_111", "first"}, {"df_222", "DB"}};
    struct api_item w111[] = {{"w_a", "a"}};
    struct api_item w222[] = {{"w_b", "b"}, {"w_c", "c"}};
    const char *ids[] = {"df_111", "df_222"};
    const struct api_item *lists[] = {w111, w222};
    size_t counts[] = {N(w111), N(w222)};
    struct ns_discovered disc = {.dashboards = items,
                                 .n_dashboards = N(items),
                                 .widget_dash_ids = ids,
                                 .widgets = lists,
                                 .n_widgets = counts,
                                 .n_widget_lists = N(ids)};
    struct ns_tree *t = ns_build(&cfg, &disc);
    check_tree(t, "df_222#df_111{a#w_a} | DB#df_222{b#w_b,c#w_c}");
    const struct ns_dashboard *db = ns_dashboard_by_id(t, "df_222");
    assert_ptr_equal(db, &t->dashboards[1]);
    assert_ptr_equal(ns_find_dashboard(t, "DB"), db);
    assert_ptr_equal(ns_find_dashboard(t, "df_222"), &t->dashboards[0]);
    assert_ptr_equal(ns_widget_by_id(db, "w_c"), &db->widgets[1]);
    assert_null(ns_widget_by_id(&t->dashboards[0], "w_b"));
    ns_unref(t);
}

/* --- ns_resolve ----------------------------------------------------------------------- */

/* 2024-12-05T12:34:56.789Z, align 60 s; the process zone is UTC (main). */
#define NOW 1733402096789LL
#define T_ALIGNED 1733402040000LL
#define DEC1 1733011200000LL
#define DEC2 1733097600000LL
#define DEC5 1733356800000LL
#define DEC6 1733443200000LL
#define RANGE "1733011200000-1733097600000.png"

struct resolve_case {
    enum ns_kind pkind; /* the parent */
    const char *pdash, *pwidget;
    const char *name;
    enum vpath_res def; /* the default resolution */
    int rc;             /* what ns_resolve returns; the rest only when 0 */
    enum ns_kind kind;
    const char *dash, *widget;
    int64_t start, end;
    enum vpath_res res;
    int relative;
    int64_t changes_at;
};

#define ROOT NS_ROOT, NULL, NULL
#define DASH(d) NS_DASHBOARD, d, NULL
#define WID(d, w) NS_WIDGET, d, w
#define DAYS(d, w) NS_DAYS, d, w
#define IMG(d, w) NS_IMAGE, d, w
#define FAILS(e) .rc = -(e)
#define TO_DIR(k, d, w) .kind = (k), .dash = (d), .widget = (w)
#define TO_IMG(d, w, s, e, r, rel, ch)                                                             \
    .kind = NS_IMAGE, .dash = (d), .widget = (w), .start = (s), .end = (e), .res = (r),            \
    .relative = (rel), .changes_at = (ch)

static const struct resolve_case RESOLVE_CASES[] = {
    /* / : dashboards, names first, then ids */
    {ROOT, "df_222", TO_DIR(NS_DASHBOARD, "df_111", NULL)}, /* the name, not df_222's id */
    {ROOT, "DB", TO_DIR(NS_DASHBOARD, "df_222", NULL)},
    {ROOT, "df_111", TO_DIR(NS_DASHBOARD, "df_111", NULL)},
    {ROOT, "empty", TO_DIR(NS_DASHBOARD, "e", NULL)},
    {ROOT, "e", TO_DIR(NS_DASHBOARD, "e", NULL)},
    {ROOT, "db", FAILS(ENOENT)},
    {ROOT, "DB ", FAILS(ENOENT)},
    {ROOT, "df_22", FAILS(ENOENT)},
    {ROOT, "", FAILS(ENOENT)},
    {ROOT, NULL, FAILS(ENOENT)},
    {ROOT, ".", FAILS(ENOENT)},
    {ROOT, "..", FAILS(ENOENT)},
    {ROOT, ".insightfs", FAILS(ENOENT)}, /* the filesystem's, not ns's */
    {ROOT, "index.html", FAILS(ENOENT)},
    {ROOT, "days", FAILS(ENOENT)},
    {ROOT, RANGE, FAILS(ENOENT)},
    /* a dashboard: the parent by its id only, then widgets, names first, then ids */
    {DASH("df_222"), "b", TO_DIR(NS_WIDGET, "df_222", "w_b")}, /* the defect */
    {DASH("df_222"), "w_b", TO_DIR(NS_WIDGET, "df_222", "w_b")},
    {DASH("df_222"), "days", TO_DIR(NS_WIDGET, "df_222", "w_days")}, /* a widget's name */
    {DASH("df_222"), "w_a", TO_DIR(NS_WIDGET, "df_222", "w_q")},
    {DASH("df_222"), "a", FAILS(ENOENT)}, /* df_111's widget */
    {DASH("df_111"), "a", TO_DIR(NS_WIDGET, "df_111", "w_a")},
    {DASH("df_111"), "w_a", TO_DIR(NS_WIDGET, "df_111", "w_a")},
    {DASH("df_111"), "w_b", TO_DIR(NS_WIDGET, "df_111", "w_x")}, /* its name, not w_b */
    {DASH("df_111"), "w_x", TO_DIR(NS_WIDGET, "df_111", "w_x")},
    {DASH("df_111"), "b", FAILS(ENOENT)},
    {DASH("df_111"), "..", FAILS(ENOENT)},
    {DASH("df_111"), "", FAILS(ENOENT)},
    {DASH("df_111"), "index.html", FAILS(ENOENT)},
    {DASH("DB"), "b", FAILS(ENOENT)},   /* a name is no stored id */
    {DASH("gone"), "a", FAILS(ENOENT)}, /* a parent the tree no longer holds */
    {DASH(NULL), "a", FAILS(ENOENT)},
    {DASH("e"), "a", FAILS(ENOENT)}, /* no widgets */
    /* a widget: days/, or an image name */
    {WID("df_222", "w_b"), "days", TO_DIR(NS_DAYS, "df_222", "w_b")},
    {WID("df_222", "w_b"), RANGE,
     TO_IMG("df_222", "w_b", DEC1, DEC2, VPATH_RES_AUTO, 0, INT64_MAX)},
    {WID("df_222", "w_b"), "1733011200000-1733097600000@high.png",
     TO_IMG("df_222", "w_b", DEC1, DEC2, VPATH_RES_HIGH, 0, INT64_MAX)},
    {WID("df_222", "w_b"), RANGE, .def = VPATH_RES_HIGH,
     TO_IMG("df_222", "w_b", DEC1, DEC2, VPATH_RES_HIGH, 0, INT64_MAX)},
    {WID("df_222", "w_b"), "20241201T0000Z-20241202T0000Z@auto.png", .def = VPATH_RES_HIGH,
     TO_IMG("df_222", "w_b", DEC1, DEC2, VPATH_RES_AUTO, 0, INT64_MAX)},
    {WID("df_222", "w_b"), "last-1h.png",
     TO_IMG("df_222", "w_b", T_ALIGNED - 3600000, T_ALIGNED, VPATH_RES_AUTO, 1, T_ALIGNED + 60000)},
    {WID("df_222", "w_b"), "last-60m.png",
     TO_IMG("df_222", "w_b", T_ALIGNED - 3600000, T_ALIGNED, VPATH_RES_AUTO, 1, T_ALIGNED + 60000)},
    {WID("df_222", "w_days"), "today.png",
     TO_IMG("df_222", "w_days", DEC5, T_ALIGNED, VPATH_RES_AUTO, 1, T_ALIGNED + 60000)},
    {WID("df_111", "w_x"), RANGE,
     TO_IMG("df_111", "w_x", DEC1, DEC2, VPATH_RES_AUTO, 0, INT64_MAX)},
    {WID("df_111", "w_b"), RANGE, FAILS(ENOENT)}, /* "w_b" names w_x there: no stored id */
    {WID("df_111", "a"), "days", FAILS(ENOENT)},
    {WID("df_222", "b"), RANGE, FAILS(ENOENT)},
    {WID("df_222", "w_a"), RANGE, FAILS(ENOENT)},
    {WID("DB", "w_b"), RANGE, FAILS(ENOENT)},
    {WID("df_222", NULL), "days", FAILS(ENOENT)},
    {WID("df_222", "w_b"), "2024-12-01.png", FAILS(ENOENT)}, /* a day belongs in days/ */
    {WID("df_222", "w_b"), "nope.png", FAILS(ENOENT)},
    {WID("df_222", "w_b"), "1733097600000-1733011200000.png", FAILS(ENOENT)},
    {WID("df_222", "w_b"), "index.html", FAILS(ENOENT)},
    {WID("df_222", "w_b"), "Days", FAILS(ENOENT)},
    {WID("df_222", "w_b"), "..", FAILS(ENOENT)},
    {WID("df_222", "w_b"), "", FAILS(ENOENT)},
    {WID("df_222", "w_b"), NULL, FAILS(ENOENT)},
    /* days/: day names only */
    {DAYS("df_222", "w_b"), "2024-12-01.png",
     TO_IMG("df_222", "w_b", DEC1, DEC2, VPATH_RES_AUTO, 0, INT64_MAX)},
    {DAYS("df_222", "w_b"), "2024-12-01@high.png",
     TO_IMG("df_222", "w_b", DEC1, DEC2, VPATH_RES_HIGH, 0, INT64_MAX)},
    {DAYS("df_222", "w_b"), "2024-12-05.png",
     TO_IMG("df_222", "w_b", DEC5, T_ALIGNED, VPATH_RES_AUTO, 1, T_ALIGNED + 60000)},
    {DAYS("df_222", "w_b"), "2024-12-06.png", FAILS(ENOENT)}, /* tomorrow */
    {DAYS("df_222", "w_b"), RANGE, FAILS(ENOENT)},
    {DAYS("df_222", "w_b"), "today.png", FAILS(ENOENT)},
    {DAYS("df_222", "w_b"), "days", FAILS(ENOENT)},
    {DAYS("df_111", "w_b"), "2024-12-01.png", FAILS(ENOENT)},
    {DAYS("gone", "w_b"), "2024-12-01.png", FAILS(ENOENT)},
    /* an image: nothing under it, whatever the name */
    {IMG("df_222", "w_b"), "x", FAILS(ENOTDIR)},
    {IMG("df_222", "w_b"), RANGE, FAILS(ENOTDIR)},
    {IMG("df_222", "w_b"), "", FAILS(ENOTDIR)},
    {IMG("gone", NULL), "..", FAILS(ENOTDIR)},
};

/* The tree every case runs against: names that equal other entries' ids at both levels. */
static void test_resolve_table(void **state)
{
    (void)state;
    struct ns_widget w111[] = {{"a", "w_a"}, {"w_b", "w_x"}};
    struct ns_widget w222[] = {{"b", "w_b"}, {"days", "w_days"}, {"w_a", "w_q"}};
    struct ns_dashboard d[] = {
        {"df_222", "df_111", w111, N(w111)},
        {"DB", "df_222", w222, N(w222)},
        {"empty", "e", NULL, 0},
    };
    struct ns_tree t = {.dashboards = d, .n_dashboards = N(d)};
    const struct vpath_clock clk = {NOW, 60};

    for (size_t i = 0; i < N(RESOLVE_CASES); i++) {
        const struct resolve_case *c = &RESOLVE_CASES[i];
        const char *what = c->name ? c->name : "(null)";
        struct ns_node parent = {c->pkind, c->pdash, c->pwidget};
        struct ns_node out, before;
        memset(&out, 0xA5, sizeof(out));
        before = out;
        int rc = ns_resolve(&t, &parent, c->name, &clk, c->def, &out);
        if (rc != c->rc)
            fail_msg("case %zu (%s): rc %d, want %d", i, what, rc, c->rc);
        if (rc != 0) {
            if (memcmp(&out, &before, sizeof(out)) != 0)
                fail_msg("case %zu (%s): out written on failure", i, what);
            continue;
        }
        if (out.kind != c->kind)
            fail_msg("case %zu (%s): kind %d, want %d", i, what, out.kind, c->kind);
        /* The ids are the tree's own strings, found by id. */
        const struct ns_dashboard *dd = ns_dashboard_by_id(&t, c->dash);
        assert_non_null(dd);
        assert_ptr_equal(out.dash_id, dd->id);
        if (c->widget) {
            const struct ns_widget *ww = ns_widget_by_id(dd, c->widget);
            assert_non_null(ww);
            if (out.widget_id != ww->id)
                fail_msg("case %zu (%s): widget %s, want %s", i, what,
                         out.widget_id ? out.widget_id : "(null)", c->widget);
        } else {
            assert_null(out.widget_id);
        }
        struct vpath_image want = {0};
        if (c->kind == NS_IMAGE)
            want = (struct vpath_image){c->start, c->end, c->res, c->relative, c->changes_at};
        if (out.img.start_ms != want.start_ms || out.img.end_ms != want.end_ms ||
            out.img.res != want.res || out.img.relative != want.relative ||
            out.img.changes_at_ms != want.changes_at_ms)
            fail_msg("case %zu (%s): image [%lld, %lld) res %d rel %d changes %lld", i, what,
                     (long long)out.img.start_ms, (long long)out.img.end_ms, out.img.res,
                     out.img.relative, (long long)out.img.changes_at_ms);
    }
}

/* A whole path, component by component, as LOOKUP and --fetch walk it. */
static int walk(const struct ns_tree *t, const char *const *parts, size_t n, struct ns_node *out)
{
    const struct vpath_clock clk = {NOW, 60};
    struct ns_node at = {0};
    for (size_t i = 0; i < n; i++) {
        struct ns_node next;
        int rc = ns_resolve(t, &at, parts[i], &clk, VPATH_RES_AUTO, &next);
        if (rc != 0)
            return rc;
        at = next;
    }
    *out = at;
    return 0;
}

static void test_resolve_walks_a_built_tree(void **state)
{
    (void)state;
    struct cfg_widget cw[] = {{"cpu", "c1"}};
    struct cfg_dashboard dash[] = {{"df_222", "df_111", cw, N(cw)}};
    struct cfg cfg = make_cfg(dash, N(dash));
    struct api_item items[] = {{"df_111", "first"}, {"df_222", NULL}};
    struct api_item w222[] = {{"w_b", "b"}};
    const char *ids[] = {"df_222"};
    const struct api_item *lists[] = {w222};
    size_t counts[] = {N(w222)};
    struct ns_discovered disc = {.dashboards = items,
                                 .n_dashboards = N(items),
                                 .widget_dash_ids = ids,
                                 .widgets = lists,
                                 .n_widgets = counts,
                                 .n_widget_lists = 1};
    struct ns_tree *t = ns_build(&cfg, &disc);
    /* No API name: the id, taken by the configured name, so suffixed. */
    check_tree(t, "df_222#df_111{cpu#c1} | df_222 (df_222)#df_222{b#w_b}");

    struct ns_node n;
    const char *p1[] = {"df_222 (df_222)", "b", "days", "2024-12-01.png"};
    assert_int_equal(walk(t, p1, N(p1), &n), 0);
    assert_int_equal(n.kind, NS_IMAGE);
    assert_string_equal(n.dash_id, "df_222");
    assert_string_equal(n.widget_id, "w_b");
    assert_int_equal(n.img.start_ms, DEC1);
    assert_int_equal(n.img.end_ms, DEC2);

    const char *p2[] = {"df_222", "cpu"};
    assert_int_equal(walk(t, p2, N(p2), &n), 0);
    assert_int_equal(n.kind, NS_WIDGET);
    assert_string_equal(n.dash_id, "df_111");
    assert_string_equal(n.widget_id, "c1");

    const char *p3[] = {"df_222", "b"};
    assert_int_equal(walk(t, p3, N(p3), &n), -ENOENT);
    const char *p4[] = {"df_222", "cpu", RANGE, "x"};
    assert_int_equal(walk(t, p4, N(p4), &n), -ENOTDIR);
    const char *p5[] = {"df_222", "cpu", "days"};
    assert_int_equal(walk(t, p5, N(p5), &n), 0);
    assert_int_equal(n.kind, NS_DAYS);
    assert_int_equal(walk(t, NULL, 0, &n), 0);
    assert_int_equal(n.kind, NS_ROOT);
    assert_null(n.dash_id);
    ns_unref(t);
}

static void test_resolve_caller_bugs(void **state)
{
    (void)state;
    struct ns_widget w[] = {{"cpu", "c1"}};
    struct ns_dashboard d[] = {{"web", "1", w, N(w)}};
    struct ns_tree t = {.dashboards = d, .n_dashboards = N(d)};
    const struct vpath_clock clk = {NOW, 60}, bad = {NOW, 0};
    struct ns_node root = {0}, widget = {NS_WIDGET, "1", "c1"}, odd = {(enum ns_kind)42};
    struct ns_node out;
    assert_int_equal(ns_resolve(NULL, &root, "web", &clk, VPATH_RES_AUTO, &out), -EINVAL);
    assert_int_equal(ns_resolve(&t, NULL, "web", &clk, VPATH_RES_AUTO, &out), -EINVAL);
    assert_int_equal(ns_resolve(&t, &root, "web", NULL, VPATH_RES_AUTO, &out), -EINVAL);
    assert_int_equal(ns_resolve(&t, &root, "web", &clk, VPATH_RES_AUTO, NULL), -EINVAL);
    assert_int_equal(ns_resolve(&t, &root, "web", &bad, VPATH_RES_AUTO, &out), -EINVAL);
    assert_int_equal(ns_resolve(&t, &widget, RANGE, &bad, VPATH_RES_AUTO, &out), -EINVAL);
    assert_int_equal(ns_resolve(&t, &odd, "web", &clk, VPATH_RES_AUTO, &out), -EINVAL);
    /* The same calls, correct, succeed: the failures above are the arguments'. */
    assert_int_equal(ns_resolve(&t, &root, "web", &clk, VPATH_RES_AUTO, &out), 0);
    assert_int_equal(ns_resolve(&t, &widget, RANGE, &clk, VPATH_RES_AUTO, &out), 0);
    assert_int_equal(out.kind, NS_IMAGE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_configured_only),
        cmocka_unit_test(test_discovered_api_order),
        cmocka_unit_test(test_configured_first_and_wins_by_id),
        cmocka_unit_test(test_sanitize_names),
        cmocka_unit_test(test_sanitize_cut),
        cmocka_unit_test(test_sanitize_then_collide),
        cmocka_unit_test(test_collisions),
        cmocka_unit_test(test_suffixed_name_fits_255_bytes),
        cmocka_unit_test(test_suffixed_name_edge_cases),
        cmocka_unit_test(test_widgets_merged),
        cmocka_unit_test(test_widgets_empty_list),
        cmocka_unit_test(test_index_html_with_pages),
        cmocka_unit_test(test_find_name_before_id_hand_built),
        cmocka_unit_test(test_find_in_built_tree),
        cmocka_unit_test(test_config_escape),
        cmocka_unit_test(test_refcount),
        cmocka_unit_test(test_inputs_borrowed),
        cmocka_unit_test(test_by_id_never_matches_names),
        cmocka_unit_test(test_by_id_in_built_tree),
        cmocka_unit_test(test_resolve_table),
        cmocka_unit_test(test_resolve_walks_a_built_tree),
        cmocka_unit_test(test_resolve_caller_bugs),
    };
    /* Day names and "today" are read in the process time zone. */
    if (vpath_tz_set("UTC") != 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
