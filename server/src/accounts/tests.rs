//! Account rules on the in-memory store and a manual clock: tokens expire by the clock,
//! revocation is per device or per user, wrong credentials say nothing about which part
//! was wrong.

use tern_proto::pb::ErrorCode;

use crate::testkit::World;

#[tokio::test]
async fn register_login_resume_and_a_token_that_expires_by_the_clock() {
    let w = World::new();
    w.accounts.register("ann", "password-1").await.unwrap();
    let e = w.accounts.register("ann", "password-2").await.unwrap_err();
    assert_eq!(e.code, ErrorCode::UserExists);

    let a = w
        .accounts
        .login("ann", "password-1", "phone")
        .await
        .unwrap();
    assert_eq!((a.user.as_str(), a.device.as_str()), ("ann", "phone"));
    assert_eq!(
        a.expires_ms,
        w.clock.now() + 3600 * 1000,
        "TTL from the clock"
    );
    let again = w.accounts.resume(&a.token).await.unwrap();
    assert_eq!(again.device, "phone");

    w.clock.advance(3600 * 1000 + 1);
    let e = w.accounts.resume(&a.token).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::TokenExpired);
    w.stop().await;
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_answer() {
    let w = World::new();
    w.accounts.register("ann", "password-1").await.unwrap();
    let wrong = w.accounts.login("ann", "nope-nope", "d").await.unwrap_err();
    let unknown = w
        .accounts
        .login("zed", "password-1", "d")
        .await
        .unwrap_err();
    assert_eq!(wrong, unknown);
    assert_eq!(wrong.code, ErrorCode::InvalidCredentials);
    let e = w
        .accounts
        .login("ann", "password-1", "bad device")
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    w.stop().await;
}

#[tokio::test]
async fn revoking_a_device_ends_its_tokens_only_and_revoking_the_user_ends_all() {
    let w = World::new();
    w.accounts.register("ann", "password-1").await.unwrap();
    let phone = w
        .accounts
        .login("ann", "password-1", "phone")
        .await
        .unwrap();
    let laptop = w
        .accounts
        .login("ann", "password-1", "laptop")
        .await
        .unwrap();
    w.accounts.revoke("ann", Some("phone")).await.unwrap();
    assert_eq!(
        w.accounts.resume(&phone.token).await.unwrap_err().code,
        ErrorCode::TokenRevoked
    );
    w.accounts.resume(&laptop.token).await.unwrap();
    // A new login of the revoked device works again.
    let phone2 = w
        .accounts
        .login("ann", "password-1", "phone")
        .await
        .unwrap();
    w.accounts.resume(&phone2.token).await.unwrap();
    assert_eq!(
        w.accounts
            .revoke("ann", Some("tablet"))
            .await
            .unwrap_err()
            .code,
        ErrorCode::NotFound
    );

    w.accounts.revoke("ann", None).await.unwrap();
    for t in [&laptop.token, &phone2.token] {
        assert_eq!(
            w.accounts.resume(t).await.unwrap_err().code,
            ErrorCode::TokenRevoked
        );
    }
    w.stop().await;
}
