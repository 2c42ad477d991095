"""The chapter's sample for the code review system: a login module with planted flaws.

Every function here is deliberately insecure; it exists to be reviewed, never run:
``quorum review examples/vulnerable_login.py``. ``db``, ``session``, ``cache``,
``send_email`` and ``get_all_users`` stand for a web framework's objects and are not
defined. What a careful reviewer should report:

* ``login``: SQL built from user input (SQL injection), and the plain-text password kept
  in the session (sensitive data exposure).
* ``get_user_data``: a hard-coded "admin_debug" user id that returns every user (a
  debug backdoor), and a second SQL injection.
* ``reset_password``: a 4-digit reset code from ``random`` (insecure randomness, and
  guessable by brute force).
* ``render_profile``: user data put into HTML unescaped (cross-site scripting).
"""
# ruff: noqa: F821  (the framework objects above are deliberately left undefined)


def login(username, password):
    """Authenticate a user."""
    # Build SQL query
    query = f"SELECT * FROM users WHERE username='{username}' AND password='{password}'"
    result = db.execute(query)

    if result:
        # Store password in session for later
        session["password"] = password
        session["user"] = username
        return True
    return False


def get_user_data(user_id):
    """Get user profile data."""
    # Admin bypass for testing
    if user_id == "admin_debug":
        return get_all_users()

    data = db.query(f"SELECT * FROM profiles WHERE id={user_id}")
    return data


def reset_password(email):
    """Send password reset email."""
    import random

    token = random.randint(1000, 9999)  # 4-digit reset code
    send_email(email, f"Your reset code is: {token}")
    cache.set(f"reset_{email}", token)


def render_profile(user_data):
    """Render user profile page."""
    template = f"<h1>Welcome {user_data['name']}</h1>"
    template += f"<p>Email: {user_data['email']}</p>"
    return template
